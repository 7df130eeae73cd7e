"""Unit tests of the model's components on tiny configs."""

import json
import math

import pytest
import torch

import reference_videoxl as ref
from model_helpers import random_frames, randomize, tiny_model, tiny_processor
from recot import EncodedVideo, VideoXLProConfig
from recot.model.compressor import ReCoTCompressor, TemporalAttentionBlock
from recot.model.groups import group_frame_order
from recot.model.selector import QueryAwareSelector, TimeSequenceLayout, num_kept, visual_rotary
from recot.model.videoxl_pro import layout_from_ids


@pytest.mark.parametrize(
    "n, expected",
    [
        (1, [0, 0, 0, 0]),
        (3, [0, 1, 2, 2]),
        (4, [0, 1, 2, 3]),
        (5, [0, 0, 1, 2, 2, 3, 4, 4]),  # 3 duplicates at (2j+1)*5//6 = 0, 2, 4
        (10, [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9]),
    ],
)
def test_group_frame_order(n, expected):
    order = group_frame_order(n)
    assert order == expected
    assert len(order) % 4 == 0 and sorted(set(order)) == list(range(n))


def test_group_frame_order_rejects_empty():
    with pytest.raises(ValueError, match="at least one frame"):
        group_frame_order(0)


@pytest.mark.parametrize("official", [True, False])
def test_temporal_attention_matches_direct_loop(official):
    torch.manual_seed(0)
    block = TemporalAttentionBlock(64, 32, max_relative_position=2, official_compat=official).double()
    randomize(block, seed=1, scale=0.5)
    x = torch.randn(2, 64, 4, 3, 2, dtype=torch.float64)
    sd = {f"p.{k}": v.detach() for k, v in block.state_dict().items()}
    expected = ref.temporal_block(x, sd, "p.", 32, official)
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


def test_relative_position_term_orientation_matters():
    torch.manual_seed(0)
    official = TemporalAttentionBlock(64, 32, 64, official_compat=True)
    randomize(official, seed=2, scale=0.5)
    clean = TemporalAttentionBlock(64, 32, 64, official_compat=False)
    clean.load_state_dict(official.state_dict())
    x = torch.randn(1, 64, 4, 2, 2)
    assert not torch.allclose(official(x), clean(x), atol=1e-4)


def test_compressor_turns_four_frames_into_one():
    comp = ReCoTCompressor(64, frames=4, stages=2, norm_groups=32)
    x = torch.randn(3, 64, 4, 5, 6)
    assert comp(x).shape == (3, 64, 1, 5, 6)
    with pytest.raises(ValueError, match=r"expects \(B, C, 4, H, W\)"):
        comp(torch.randn(3, 64, 2, 5, 6))


def test_compressor_stages_halve_time():
    comp = ReCoTCompressor(64, frames=8, stages=3, norm_groups=32)
    assert comp(torch.randn(1, 64, 8, 3, 3)).shape == (1, 64, 1, 3, 3)


def test_official_grouping_is_raw_reshape_index_rule():
    model = tiny_model()
    c = model.config.vision_hidden_size
    features = torch.randn(8, c, 6, 6)
    grouped = model.group_features(features)
    for g, cp, tp in [(0, 0, 0), (0, 17, 3), (1, 40, 1), (1, 63, 3)]:
        flat = 4 * cp + tp
        torch.testing.assert_close(grouped[g, cp, tp], features[4 * g + flat // c, flat % c])


def test_rotary_matches_complex_rotation():
    seq = torch.randn(300, 32, dtype=torch.float64)
    out = visual_rotary(seq, 1e6)
    inv_freq = torch.exp(torch.arange(0, 32, 2, dtype=torch.float32) * (-math.log(1e6) / 32))
    angle = torch.arange(300, dtype=torch.float32)[:, None] * inv_freq  # float32, as released
    turn = torch.complex(angle.cos().double(), angle.sin().double())
    expected = torch.view_as_real(torch.view_as_complex(seq.view(300, 16, 2).contiguous()) * turn)
    torch.testing.assert_close(out, expected.flatten(1), rtol=1e-12, atol=1e-12)
    assert visual_rotary(seq.float(), 1e6).dtype == torch.float32


def test_rotary_keeps_half_precision_dtype():
    seq = torch.randn(10, 16).bfloat16()
    out = visual_rotary(seq, 1e6)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out[0], seq[0])  # position 0 is not rotated


def _selector(multiple: int = 16, **overrides: object) -> tuple[QueryAwareSelector, torch.Tensor, TimeSequenceLayout]:
    config = VideoXLProConfig.from_preset("tiny", selector_multiple=multiple, **overrides)
    torch.manual_seed(0)
    selector = QueryAwareSelector(config).eval()
    ids = []
    for _ in range(6):  # 6 groups: 3 time tokens then 24 placeholders (144 visual tokens)
        ids += [1, 2, 3] + [config.placeholder_token_id] * 24
    layout = layout_from_ids(torch.tensor(ids), config.placeholder_token_id)
    sequence = torch.randn(len(ids), config.hidden_size)
    return selector, sequence, layout


def test_selector_keeps_multiple_of_16_in_order_with_all_time_tokens():
    selector, sequence, layout = _selector()
    text = torch.randn(7, sequence.shape[1])
    with torch.no_grad():
        sel = selector(sequence, layout, text, keep_ratio=0.7)
    assert len(sel.kept_visual) == int(144 * 0.7) // 16 * 16 == 96
    assert sel.kept_visual.tolist() == sorted(sel.kept_visual.tolist())
    time_positions = (~layout.visual_mask).nonzero().flatten()
    assert set(time_positions.tolist()) <= set(sel.kept_positions.tolist())
    assert len(sel.sequence) == 18 + 96
    # The kept visual tokens are the 96 best scores.
    assert set(sel.kept_visual.tolist()) == set(sel.scores.topk(96).indices.tolist())
    assert sel.scores.min() == 0 and sel.scores.max() == 1


def test_selector_drops_the_times_of_groups_with_no_kept_token():
    """drop_empty_group_times: the kept sequence is the kept visual tokens and the time texts of their groups
    only (6 groups of 3 time + 24 visual tokens; 20 kept), in order; the released rule keeps all 6 texts."""
    selector, sequence, layout = _selector(multiple=1, drop_empty_group_times=True)
    text = torch.randn(5, sequence.shape[1])
    with torch.no_grad():
        dropping = selector(sequence, layout, text, keep_ratio=1.0, max_visual_tokens=20)
        selector.config = VideoXLProConfig.from_preset("tiny", selector_multiple=1)
        keeping = selector(sequence, layout, text, keep_ratio=1.0, max_visual_tokens=20)
    assert torch.equal(dropping.kept_visual, keeping.kept_visual) and len(dropping.kept_visual) == 20
    groups = sorted({i // 24 for i in dropping.kept_visual.tolist()})
    assert 0 < len(groups) < 6  # the 20 best of 144 random scores leave some group with none
    expected = [27 * g + t for g in groups for t in range(3)]
    expected = sorted(expected + [27 * (i // 24) + 3 + i % 24 for i in dropping.kept_visual.tolist()])
    assert dropping.kept_positions.tolist() == expected
    assert len(keeping.kept_positions) == 18 + 20
    # the rows kept are the released rule's rows at those positions (rotated there, scores added)
    rows = {pos: row for pos, row in zip(keeping.kept_positions.tolist(), keeping.sequence, strict=True)}
    torch.testing.assert_close(dropping.sequence, torch.stack([rows[pos] for pos in expected]), rtol=0, atol=0)


def test_selector_keep_ratio_one_keeps_everything_and_budget_caps():
    selector, sequence, layout = _selector()
    text = torch.randn(4, sequence.shape[1])
    with torch.no_grad():
        all_kept = selector(sequence, layout, text, keep_ratio=1.0)
        capped = selector(sequence, layout, text, keep_ratio=1.0, max_visual_tokens=40)
    assert all_kept.kept_visual.tolist() == list(range(144))
    assert len(all_kept.sequence) == len(sequence)
    assert len(capped.kept_visual) == 32  # 40 rounded down to a multiple of 16
    with pytest.raises(ValueError, match="keep_ratio"):
        num_kept(selector.config, 144, 1.5)


@pytest.mark.parametrize(
    ("num_visual", "ratio", "cap", "expected"),
    [
        (144, 0.85, None, 112),  # released rule: int(122.4) = 122, rounded down to 112
        (16, 0.85, None, 13),  # one tiny group: 13 rounds to 0, so the 13 are kept
        (9, 0.5, None, 4),
        (1, 0.85, None, 1),  # a single token is never dropped
        (144, 0.85, 10, 10),  # a cap below the multiple: the cap itself
        (0, 0.85, None, 0),
    ],
)
def test_num_kept_never_rounds_a_video_to_nothing(num_visual, ratio, cap, expected):
    config = VideoXLProConfig.from_preset("tiny", selector_multiple=16)
    assert num_kept(config, num_visual, ratio, cap) == expected
    with pytest.raises(ValueError, match="max_visual_tokens must be >= 1, got 0"):
        num_kept(config, num_visual, ratio, 0)


def test_selector_adds_score_after_rotation():
    selector, sequence, layout = _selector(multiple=1)
    text = torch.randn(4, sequence.shape[1])
    with torch.no_grad():
        sel = selector(sequence, layout, text, keep_ratio=1.0)
    rotated = visual_rotary(sequence, selector.rotary_base)
    visual = layout.visual_mask
    torch.testing.assert_close(sel.sequence[~visual], rotated[~visual])
    torch.testing.assert_close(sel.sequence[visual], rotated[visual] + sel.scores[:, None])


def test_equal_scores_become_zero_not_nan():
    selector, sequence, layout = _selector()
    with torch.no_grad():
        for p in selector.text_mlp.parameters():
            p.zero_()
        scores = selector.score(sequence, layout, torch.randn(3, sequence.shape[1]))
    assert torch.equal(scores, torch.zeros(144))


def test_layout_from_ids_handles_variable_time_lengths():
    ph = 7
    ids = torch.tensor([1, 2, ph, ph, 3, 4, 5, ph, ph])
    layout = layout_from_ids(ids, ph)
    assert layout.windows == [(0, 2, 2), (4, 3, 2)]
    with pytest.raises(ValueError, match="ends with text tokens"):
        layout_from_ids(torch.tensor([1, ph, 2]), ph)


def test_shapes_through_every_stage():
    model = tiny_model()
    proc = tiny_processor(model.config)
    inputs = proc("Where is the cat?", random_frames(9), [0.1 * i for i in range(9)])
    out = model(**inputs, keep_ratio=0.5, return_intermediates=True)
    inter = out.intermediates
    assert inter.encoder.vision_features.shape == (12, 49, 64)
    assert inter.encoder.resized_features.shape == (12, 64, 6, 6)
    assert inter.encoder.compressor_input.shape == (3, 64, 4, 6, 6)
    assert inter.encoder.compressor_output.shape == (3, 36, 64)
    assert inter.encoder.projector_output.shape == (3, 36, 64)
    assert inter.encoder.pooled_tokens.shape == (3, 9, 64)
    assert inter.inputs.selection.scores.shape == (27,)
    assert len(inter.inputs.selection.kept_visual) == 13
    n_time = len(inputs["time_sequence_ids"]) - 27
    assert inter.inputs.inputs_embeds.shape == (1, len(inputs["input_ids"]) - 1 + n_time + 13, 64)
    assert out.logits.shape == (1, inter.inputs.inputs_embeds.shape[1], 512)


def test_encode_video_group_timestamps_and_chunking():
    model = tiny_model()
    proc = tiny_processor(model.config)
    pixels = proc.preprocess_frames(random_frames(22))
    times = [float(i) for i in range(22)]
    encoded = model.encode_video(pixels, times)
    assert encoded.tokens.shape == (6, 9, 64)
    order = group_frame_order(22)
    assert encoded.timestamps.tolist() == [float(order[4 * g]) for g in range(6)]
    # Chunked (compressor_batch_size=4 groups) equals all groups at once.
    with torch.no_grad():
        whole = model.encode_groups(pixels[order]).pooled_tokens
    torch.testing.assert_close(encoded.tokens, whole, rtol=1e-5, atol=1e-6)


def test_image_is_a_static_clip_and_text_only_works():
    model = tiny_model()
    proc = tiny_processor(model.config)
    image = random_frames(1)[0]
    inputs = proc("Describe the image.", image)
    assert inputs["pixel_values"].shape == (1, 3, 98, 98)
    out = model(**inputs, keep_ratio=1.0, return_intermediates=True)
    grouped = out.intermediates.encoder.compressor_input
    # Official layout of 4 identical frames: every frame slot holds the same image.
    resized = out.intermediates.encoder.resized_features
    assert torch.equal(resized[0], resized[3])
    assert grouped.shape == (1, 64, 4, 6, 6)
    text_only = proc("Say hi.")
    logits = model(**text_only).logits
    assert logits.shape == (1, len(text_only["input_ids"]), 512)


def test_generate_is_greedy_and_deterministic():
    model = tiny_model()
    proc = tiny_processor(model.config)
    inputs = proc("What?", random_frames(8), [float(i) for i in range(8)])
    a = model.generate(**inputs, keep_ratio=0.5, max_new_tokens=6, eos_token_id=None, pad_token_id=256)
    b = model.generate(**inputs, keep_ratio=0.5, max_new_tokens=6, eos_token_id=None, pad_token_id=256)
    assert torch.equal(a, b) and a.shape == (1, 6)
    # Greedy: each token is the argmax of the model's own logits for the prefix.
    embeds = model.embed_inputs(inputs["input_ids"], model.encode_video(inputs["pixel_values"], inputs["timestamps"]),
                                 inputs["time_sequence_ids"], keep_ratio=0.5).inputs_embeds
    with torch.no_grad():
        first = model.language_model(inputs_embeds=embeds).logits[0, -1].argmax()
    assert a[0, 0] == first
    # The KV-cached generation equals a full recomputation at every step.
    embed = model.language_model.get_input_embeddings()
    with torch.no_grad():
        for token in a[0]:
            assert model.language_model(inputs_embeds=embeds).logits[0, -1].argmax() == token
            embeds = torch.cat([embeds, embed(token.view(1, 1))], dim=1)


def test_prompt_without_video_rejects_encoded_video():
    model = tiny_model()
    proc = tiny_processor(model.config)
    encoded = EncodedVideo(torch.zeros(1, 9, 64), torch.zeros(1, dtype=torch.float64))
    with pytest.raises(ValueError, match="no image token"):
        model.embed_inputs(proc.tokenize_prompt("q", with_video=False), encoded)
    with pytest.raises(ValueError, match="exactly one is needed"):
        model.embed_inputs(proc.tokenize_prompt("q"), None)


def test_time_sequence_must_match_video():
    model = tiny_model()
    proc = tiny_processor(model.config)
    encoded = EncodedVideo(torch.zeros(2, 9, 64), torch.tensor([0.0, 4.0], dtype=torch.float64))
    wrong = proc.time_sequence_ids([0.0, 4.0, 8.0])
    with pytest.raises(ValueError, match="3 windows"):
        model.embed_inputs(proc.tokenize_prompt("q"), encoded, wrong)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_close_to_float32(dtype):
    model = tiny_model()
    proc = tiny_processor(model.config)
    inputs = proc("What?", random_frames(4), [0.0, 1.0, 2.0, 3.0])
    with torch.no_grad():
        ref32 = model(**inputs, keep_ratio=1.0).logits
        low = model.to(dtype)(**inputs, keep_ratio=1.0).logits
    assert low.dtype == dtype
    assert (low.float() - ref32).abs().max() < 0.15 * ref32.abs().max()


def test_window_attention_with_windows_of_several_shapes_matches_each_window_alone():
    """Windows of different time-text lengths (a clock past one hour) are attended in batches by shape; the rows
    come back in window order, equal to attending each window by itself."""
    from recot.model.selector import WindowTimeToTokenAttention

    torch.manual_seed(0)
    attention = WindowTimeToTokenAttention(8, 2, official_compat=False)
    windows, start = [], 0
    for n_time, n_visual in ((5, 3), (7, 3), (5, 3), (7, 2), (5, 3)):
        windows.append((start, n_time, n_visual))
        start += n_time + n_visual
    sequence = torch.randn(start, 8)
    with torch.no_grad():
        together = attention(sequence, windows)
        alone = torch.cat([attention(sequence[s : s + t + v], [(0, t, v)]) for s, t, v in windows])
    assert together.shape == (14, 8)
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-6)


def test_selector_scores_do_not_depend_on_window_chunking():
    selector, sequence, layout = _selector()
    text = torch.randn(5, sequence.shape[1])
    with torch.no_grad():
        whole = selector.score(sequence, layout, text)
        selector.windows_per_chunk = 2
        chunked = selector.score(sequence, layout, text)
        kept = selector(sequence, layout, text, keep_ratio=0.5)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    # Rotating only the kept rows equals rotating everything and then keeping.
    full = visual_rotary(sequence, selector.rotary_base)[kept.kept_positions]
    visual = layout.visual_mask[kept.kept_positions]
    torch.testing.assert_close(kept.sequence[~visual], full[~visual])


def test_replicate_pad_equals_torch_replicate_padding():
    from recot.model.compressor import replicate_pad

    x = torch.randn(2, 3, 4, 5, 6)
    expected = torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 0), mode="replicate")
    assert torch.equal(replicate_pad(x), expected)
    half = x.to(torch.bfloat16)
    assert replicate_pad(half).dtype == torch.bfloat16
    assert torch.equal(replicate_pad(half).float(), torch.nn.functional.pad(half.float(), (1, 1, 1, 1, 1, 0), mode="replicate"))


def test_passthrough_channels_are_the_mean_input_and_the_rest_unchanged():
    """compressor_passthrough_channels: the last N output channels are each step's mean input, exactly; the
    others are what the residual compressor gives; the config checks N and keeps it through config.json."""
    torch.manual_seed(0)
    residual = ReCoTCompressor(64, frames=4, stages=2, norm_groups=32, official_compat=False, residual=True)
    passthrough = ReCoTCompressor(64, frames=4, stages=2, norm_groups=32, official_compat=False, residual=True,
                                  passthrough_channels=16)  # fmt: skip
    passthrough.load_state_dict(residual.state_dict())  # no parameters of its own
    x = torch.randn(3, 64, 4, 5, 6)
    with torch.no_grad():
        out, reference = passthrough(x), residual(x)
    assert torch.equal(out[:, 48:], x[:, 48:].mean(dim=2, keepdim=True))
    assert torch.equal(out[:, :48], reference[:, :48])
    with pytest.raises(ValueError, match="passthrough_channels=65 must be in"):
        ReCoTCompressor(64, passthrough_channels=65)
    with pytest.raises(ValueError, match="compressor_passthrough_channels=99 must be in"):
        VideoXLProConfig.from_preset("lite48", compressor_passthrough_channels=99)
    config = VideoXLProConfig.from_preset("lite48", compressor_passthrough_channels=16)
    assert VideoXLProConfig.from_json_dict(config.to_json_dict()).compressor_passthrough_channels == 16
    assert "compressor_passthrough_channels" not in json.dumps(VideoXLProConfig.from_preset("lite48").to_json_dict())


def test_residual_compressor_adds_each_steps_mean_input():
    torch.manual_seed(0)
    plain = ReCoTCompressor(64, frames=4, stages=2, norm_groups=32, official_compat=False)
    residual = ReCoTCompressor(64, frames=4, stages=2, norm_groups=32, official_compat=False, residual=True)
    residual.load_state_dict(plain.state_dict())  # the residual path has no parameters
    x = torch.randn(3, 64, 4, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(residual(x), plain(x) + x.mean(dim=2, keepdim=True))
        eight = ReCoTCompressor(64, frames=8, stages=2, norm_groups=32, residual=True)  # 8 -> 2 steps of 4 frames
        y = torch.randn(1, 64, 8, 3, 3)
        mean = torch.stack([y[:, :, :4].mean(2), y[:, :, 4:].mean(2)], dim=2)
        eight.residual = False
        learned = eight(y)
        eight.residual = True
        torch.testing.assert_close(eight(y), learned + mean)
