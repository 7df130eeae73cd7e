"""time_vector models: one absolute-time vector per second, on each group's window and on the prompt's clocks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from engine_fixtures import tiny_model_and_processor, write_video
from recot import VideoXLProConfig
from recot.engine import VideoChat
from recot.model.encoder import EncodedVideo
from recot.model.processor import VideoXLProProcessor
from recot.model.time_vectors import covering_groups, group_middle_times, time_vectors
from recot.model.tokenizer import build_byte_tokenizer


def test_time_vectors_are_sines_and_cosines_of_the_time():
    times = torch.tensor([[0.0, 100.0, math.nan], [4.0, 101.0, 3000.0]])
    vectors = time_vectors(times, 16)
    assert vectors.shape == (2, 3, 16) and vectors.dtype == torch.float32
    assert torch.equal(vectors[0, 2], torch.zeros(16))
    periods = 8.0 * 900.0 ** (np.arange(8) / 7)  # 8 s .. 7,200 s
    for t, v in ((100.0, vectors[0, 1]), (3000.0, vectors[1, 2]), (0.0, vectors[0, 0])):
        angle = 2 * np.pi * t / periods
        np.testing.assert_allclose(v.numpy(), np.concatenate([np.sin(angle), np.cos(angle)]) / np.sqrt(8), atol=1e-6)
    np.testing.assert_allclose(vectors[1].norm(dim=-1).numpy(), 1.0, atol=1e-6)  # unit length
    near, far = vectors[0, 1] @ vectors[1, 1], vectors[0, 1] @ vectors[1, 2]
    assert near > 0.95 and far < 0.5  # a second apart looks alike; 48 minutes apart does not
    odd = time_vectors(torch.tensor([5.0]), 7)
    assert odd.shape == (1, 7) and odd[0, -1] == 0 and torch.allclose(odd[0, :6], time_vectors(torch.tensor([5.0]), 6)[0])


def test_group_middle_times():
    middles = group_middle_times(torch.tensor([0.0, 4.0, 8.0], dtype=torch.float64), 4)
    assert middles.tolist() == [1.5, 5.5, 9.5]  # frames at 0..3, 4..7, 8..11
    # 2 fps, 4-frame groups of 2 s: frames at 10.0, 10.5, 11.0, 11.5 -> 10.75
    assert group_middle_times(torch.tensor([10.0, 12.0]), 4).tolist() == [10.75, 12.75]
    assert group_middle_times(torch.tensor([7.0]), 4).tolist() == [7.0]


@pytest.mark.parametrize("clock_tokens", [False, True])
def test_clock_times_mark_every_clock_of_a_prompt_and_nothing_else(clock_tokens):
    processor = VideoXLProProcessor(build_byte_tokenizer(clock_tokens), VideoXLProConfig.from_preset("lite48"))
    question = "What is on screen at 01:34? And at 1:02:03, not 123:45, 5.30 or Time 0004.0s: 7:5"
    ids = processor.tokenize_prompt(question)
    times = processor.clock_times(ids)
    assert times.shape == ids.shape and times.dtype == torch.float64
    marked: dict[float, str] = {}
    for i, t in zip(ids.tolist(), times.tolist(), strict=True):
        if not math.isnan(t):
            marked[t] = marked.get(t, "") + processor.tokenizer.decode([i])
    assert marked == {94.0: "01:34", 3723.0: "1:02:03"}
    assert math.isnan(times[ids.tolist().index(processor.config.image_token_index)])


def _encoded(model, groups: int, seed: int = 0) -> EncodedVideo:
    g = torch.Generator().manual_seed(seed)
    p, d = model.config.tokens_per_group, model.config.hidden_size
    return EncodedVideo(torch.randn(groups, p, d, generator=g), torch.arange(groups, dtype=torch.float64) * 4.0)


def test_model_adds_the_vectors_to_each_window_and_to_the_prompts_clocks():
    """embed_inputs of a time_vector model = the plain model's + time_vectors, computed here independently, each as
    long as the token it marks (at least 1: the random visual tokens here are longer, the text embeddings shorter)."""
    timed, processor = tiny_model_and_processor(seed=2, time_vector=True, keep_ratio=1.0, time_format="clock")
    plain, _ = tiny_model_and_processor(seed=2, time_vector=False, keep_ratio=1.0, time_format="clock")
    assert all(torch.equal(a, b) for a, b in zip(timed.state_dict().values(), plain.state_dict().values(), strict=True))
    encoded = _encoded(timed, 5)
    ids = processor.tokenize_prompt("What is on screen at 00:09?")
    time_ids = processor.time_sequence_ids(encoded.timestamps)
    times = processor.clock_times(ids)
    with torch.no_grad():
        a = timed.embed_inputs(ids, encoded, time_ids, input_times=times)
        b = plain.embed_inputs(ids, encoded, time_ids, input_times=times)  # ignored without time_vector
        c = timed.embed_inputs(ids, encoded, time_ids)  # no input_times: only the windows get vectors
    d = timed.config.hidden_size
    expected_sequence = torch.zeros_like(b.time_sequence)
    row = 0
    for g in range(5):
        width = len(processor.tokenizer(processor.time_text(4.0 * g), add_special_tokens=False).input_ids) + timed.config.tokens_per_group
        lengths = b.time_sequence[row : row + width].norm(dim=-1, keepdim=True).clamp(min=1.0)
        expected_sequence[row : row + width] = time_vectors(torch.tensor([4.0 * g + 1.5]), d) * lengths
        row += width
    assert row == len(time_ids)
    visual = b.time_sequence.norm(dim=-1) > 1
    assert int(visual.sum()) == 5 * timed.config.tokens_per_group  # the visual tokens, and only they, are longer
    torch.testing.assert_close(a.time_sequence - b.time_sequence, expected_sequence, atol=1e-6, rtol=0)
    pos = ids.tolist().index(timed.config.image_token_index)
    prompt_delta = torch.cat([a.inputs_embeds[0, :pos], a.inputs_embeds[0, pos + len(time_ids) :]]) - torch.cat(
        [b.inputs_embeds[0, :pos], b.inputs_embeds[0, pos + len(time_ids) :]]
    )
    expected_prompt = time_vectors(torch.cat([times[:pos], times[pos + 1 :]]), d)  # text: shorter than 1
    text_ids = torch.cat([ids[:pos], ids[pos + 1 :]])
    assert float(timed.language_model.get_input_embeddings()(text_ids).norm(dim=-1).max()) < 1
    torch.testing.assert_close(prompt_delta, expected_prompt, atol=1e-6, rtol=0)
    assert int((expected_prompt.abs().sum(-1) > 0).sum()) == 5  # the five bytes of "00:09"
    torch.testing.assert_close(c.time_sequence, a.time_sequence)
    torch.testing.assert_close(c.inputs_embeds[0, :pos], b.inputs_embeds[0, :pos])


def test_answers_get_no_vectors_and_shapes_are_checked():
    timed, processor = tiny_model_and_processor(seed=2, time_vector=True, time_format="clock")
    ids = processor.tokenize_prompt("When is it? At 00:07?", with_video=False)
    answer = torch.tensor(processor.tokenizer("00:12", add_special_tokens=False).input_ids)
    full = torch.cat([ids, answer])
    labels = torch.cat([torch.full_like(ids, -100), answer])
    times = processor.clock_times(full)
    assert int((~times.isnan()).sum()) == 10  # both clocks are marked...
    with torch.no_grad():
        with_labels = timed.embed_inputs(full, labels=labels, input_times=times).inputs_embeds[0]
        without = timed.embed_inputs(full, input_times=times).inputs_embeds[0]
        bare = timed.language_model.get_input_embeddings()(full)
    n = len(ids)
    torch.testing.assert_close(with_labels[n:], bare[n:])  # ...but the answer's stays plain under labels
    assert not torch.allclose(without[n:], bare[n:])
    torch.testing.assert_close(with_labels[:n], without[:n])
    with pytest.raises(ValueError, match=r"input_times has shape \(3,\); input_ids has"):
        timed.embed_inputs(full, input_times=times[:3])


def test_covering_groups_finds_the_group_each_time_falls_in():
    starts = np.array([2.0, 6.0, 10.0, 14.0])
    times = np.array([np.nan, 0.0, 2.0, 5.9, 6.0, 13.99, 14.0, 500.0, np.nan])
    positions, groups = covering_groups(starts, times)
    assert positions.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert groups.tolist() == [0, 0, 0, 1, 2, 3, 3]  # before the video: the first group; after it: the last


def test_clock_grounding_adds_the_covering_groups_mean_token_to_the_prompts_clocks():
    """With clock_grounding, each clock of the prompt gets the mean visual token of the group covering its time
    (computed here from the encoding), the answer's clock gets nothing, and the time sequence is unchanged. (The
    training path is compared with this one in test_micro_batch_embedding_equals_embed_inputs_per_sample.)"""
    grounded, processor = tiny_model_and_processor(seed=3, clock_grounding=True, keep_ratio=1.0, time_format="clock")
    plain, _ = tiny_model_and_processor(seed=3, keep_ratio=1.0, time_format="clock")
    assert grounded.config.uses_clock_times and not plain.config.uses_clock_times
    g = torch.Generator().manual_seed(1)
    p, d = grounded.config.tokens_per_group, grounded.config.hidden_size
    encoded = EncodedVideo(torch.randn(5, p, d, generator=g), torch.tensor([2.0, 6.0, 10.0, 14.0, 18.0]))
    ids = processor.tokenize_prompt("What is on screen at 00:09, at 00:01 and at 01:00?")
    answer = torch.tensor(processor.tokenizer("00:10", add_special_tokens=False).input_ids)
    full, labels = torch.cat([ids, answer]), torch.cat([torch.full_like(ids, -100), answer])
    time_ids = processor.time_sequence_ids(encoded.timestamps)
    times = processor.clock_times(full)
    with torch.no_grad():
        a = grounded.embed_inputs(full, encoded, time_ids, labels=labels, input_times=times)
        b = plain.embed_inputs(full, encoded, time_ids, labels=labels, input_times=times)
    torch.testing.assert_close(a.time_sequence, b.time_sequence)
    pos = ids.tolist().index(grounded.config.image_token_index)
    width = len(time_ids)
    delta = torch.cat([a.inputs_embeds[0, :pos], a.inputs_embeds[0, pos + width :]]) - torch.cat(
        [b.inputs_embeds[0, :pos], b.inputs_embeds[0, pos + width :]]
    )
    text_times = torch.cat([times[:pos], times[pos + 1 :]])
    expected = torch.zeros_like(delta)
    for seconds, group in ((9.0, 1), (1.0, 0), (60.0, 4)):
        expected[text_times == seconds] = encoded.tokens[group].mean(0)
    assert int((expected.abs().sum(-1) > 0).sum()) == 15  # three clocks of five bytes; not the answer's "00:10"
    torch.testing.assert_close(delta, expected, atol=1e-6, rtol=0)


def test_processor_gives_the_clock_times_to_a_model_that_reads_them():
    """processor(question, frames, times) carries input_times for a clock model (so model.generate(**inputs) grounds
    the question's clock as the engine does) and nothing new for the released kind."""
    grounded, processor = tiny_model_and_processor(seed=3, clock_grounding=True, keep_ratio=1.0, time_format="clock")
    frames = np.random.default_rng(0).integers(0, 256, (8, 98, 98, 3), dtype=np.uint8)
    inputs = processor("What is on screen at 00:05?", frames, list(np.arange(8.0)))
    assert torch.equal(inputs["input_times"].isnan(), processor.clock_times(inputs["input_ids"]).isnan())
    assert sorted(set(inputs["input_times"][~inputs["input_times"].isnan()].tolist())) == [5.0]
    with torch.no_grad():
        with_times = grounded(**inputs).logits
        without = grounded(**{k: v for k, v in inputs.items() if k != "input_times"}).logits
    assert not torch.allclose(with_times, without)
    _, released = tiny_model_and_processor()
    assert "input_times" not in released("What is at 00:05?", frames, list(np.arange(8.0)))
    assert "input_times" not in released("What is at 00:05?")


def test_config_keeps_the_field_and_old_configs_keep_their_bytes():
    assert VideoXLProConfig.from_preset("lite48").time_vector is True
    assert VideoXLProConfig.from_preset("lite48").clock_grounding is True
    assert VideoXLProConfig.from_preset("small").time_vector is False
    assert "time_vector" not in json.dumps(VideoXLProConfig.from_preset("small").to_json_dict())
    timed = VideoXLProConfig.from_preset("tiny", time_vector=True)
    assert VideoXLProConfig.from_json_dict(json.loads(json.dumps(timed.to_json_dict()))).time_vector is True
    assert "clock_grounding" not in json.dumps(VideoXLProConfig.from_preset("small").to_json_dict())
    grounded = VideoXLProConfig.from_preset("tiny", clock_grounding=True)
    assert VideoXLProConfig.from_json_dict(json.loads(json.dumps(grounded.to_json_dict()))).clock_grounding is True


def test_engine_passes_the_questions_clock_times(tmp_path, monkeypatch):
    """VideoChat.ask gives generate the prompt's clock times for a time_vector or clock_grounding model (and none
    otherwise)."""
    video = write_video(tmp_path / "v.mp4", num_frames=30)
    for flag, kind in ((True, "time_vector"), (True, "clock_grounding"), (False, "time_vector")):
        model, processor = tiny_model_and_processor(**{kind: flag}, time_format="clock")
        seen = {}
        original = model.generate

        def spy(input_ids, _seen=seen, _original=original, **kwargs):
            _seen.update(input_ids=input_ids, input_times=kwargs.get("input_times"))
            return _original(input_ids, **kwargs)

        monkeypatch.setattr(model, "generate", spy)
        VideoChat(model, processor).ask(video, "What is on screen at 00:01?")
        if flag:
            expected = processor.clock_times(seen["input_ids"])
            assert np.array_equal(seen["input_times"].numpy(), expected.numpy(), equal_nan=True)
            assert sorted(set(expected[~expected.isnan()].tolist())) == [1.0]
        else:
            assert seen["input_times"] is None


def test_training_samples_carry_the_clock_times_and_the_loss_uses_them():
    """recot.train: a time_vector model's sample has the conversation's clock times, and the forward adds them."""
    from recot.train.config import TrainConfig
    from recot.train.data import Sample, tokenize_conversation
    from recot.train.forward import embed_micro_batch
    from recot.train.trainer import model_input

    cfg = TrainConfig.model_validate({"model": {"preset": "tiny"}})
    turns = [("What is on screen at 00:09?", "a red ring"), ("And at 1:00:02?", "the sea at 1:00:00")]
    sample = Sample("rows.json", 1, "x", None, None, None, turns, {})
    losses = []
    for flag in (True, False):
        model, processor = tiny_model_and_processor(seed=4, time_vector=flag, time_format="clock")
        tokens = tokenize_conversation(sample, processor)
        item = model_input(sample, tokens, processor, cfg, keep_ratio=1.0)
        if flag:
            expected = processor.clock_times(tokens.input_ids)
            assert np.array_equal(item.input_times.numpy(), expected.numpy(), equal_nan=True)
            assert sorted(set(expected[~expected.isnan()].tolist())) == [9.0, 3600.0, 3602.0]
        else:
            assert item.input_times is None
        with torch.no_grad():
            inputs, labels, lengths, _ = embed_micro_batch(model, [item], [None])
            embeds = inputs[0, : lengths[0]]
            direct = model.embed_inputs(item.input_ids, labels=item.labels, input_times=item.input_times)
        torch.testing.assert_close(embeds, direct.inputs_embeds[0])
        losses.append(embeds)
    assert not torch.allclose(losses[0], losses[1])  # same weights: only the time vectors differ


def test_train_starts_the_llm_from_a_saved_qwen2_and_refuses_one_of_other_sizes(tmp_path):
    """model.language_model: the probe's --save output becomes the LLM of the model recot train starts from."""
    from transformers import Qwen2ForCausalLM

    from recot.model.checkpoint import CheckpointError
    from recot.train.config import TrainConfig
    from recot.train.stages import load_base_model

    config = VideoXLProConfig.from_preset("tiny")
    torch.manual_seed(7)
    llm = Qwen2ForCausalLM(config.text_config())
    llm.save_pretrained(tmp_path / "llm")
    cfg = TrainConfig.model_validate({"model": {"preset": "tiny", "language_model": str(tmp_path / "llm")}})
    model, _ = load_base_model(cfg)
    fresh, _ = load_base_model(TrainConfig.model_validate({"model": {"preset": "tiny"}}))
    for name, tensor in llm.state_dict().items():
        assert torch.equal(model.language_model.state_dict()[name], tensor), name
    assert not torch.equal(fresh.language_model.lm_head.weight, model.language_model.lm_head.weight)
    assert all(torch.equal(a, b) for a, b in zip(model.projector.state_dict().values(),
                                                 fresh.projector.state_dict().values(), strict=True))  # fmt: skip
    other = VideoXLProConfig.from_preset("tiny", hidden_size=2 * config.hidden_size).text_config()
    Qwen2ForCausalLM(other).save_pretrained(tmp_path / "wide")
    for path, message in ((tmp_path / "wide", r"wide \(model.language_model\) does not fit this model's LLM \(\d+ tensors, e\.g\. "),
                          (tmp_path / "nope", r"nope \(model.language_model\) is not a model directory: it has no config.json")):  # fmt: skip
        cfg = TrainConfig.model_validate({"model": {"preset": "tiny", "language_model": str(path)}})
        with pytest.raises(CheckpointError, match=message):
            load_base_model(cfg)
