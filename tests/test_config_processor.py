"""The config (presets, config.json) and the processor (frames, prompt, time sequence)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from model_helpers import random_frames, tiny_processor
from recot import VideoXLProConfig


def test_released_preset_sizes():
    cfg = VideoXLProConfig.from_preset("videoxl-pro-3b")
    assert (cfg.vision_hidden_size, cfg.vision_num_layers, cfg.hidden_size, cfg.num_hidden_layers) == (1152, 26, 2048, 36)
    assert cfg.patches_per_side == 27 and cfg.grid_size == 24 and cfg.tokens_per_group == 144
    assert cfg.placeholder_token_id == 151654 and cfg.official_compat


def test_unknown_preset_and_bad_sizes():
    with pytest.raises(KeyError, match="unknown preset 'huge'; available: lite, lite48, small, tiny, videoxl-pro-3b"):
        VideoXLProConfig.from_preset("huge")
    with pytest.raises(ValueError, match="frames_per_group=4 must equal 2\\*\\*compressor_stages \\(= 8\\)"):
        VideoXLProConfig(compressor_stages=3)
    with pytest.raises(ValueError, match="vision_hidden_size=100 is not divisible by compressor_norm_groups=32"):
        VideoXLProConfig(vision_hidden_size=100)


def test_config_json_round_trip(tmp_path):
    cfg = VideoXLProConfig.from_preset("tiny", keep_ratio=0.5)
    cfg.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "llava_qwen" and data["hidden_size"] == 64 and data["mm_hidden_size"] == 64
    assert VideoXLProConfig.load(tmp_path / "config.json") == cfg


def test_text_and_vision_configs():
    cfg = VideoXLProConfig.from_preset("videoxl-pro-3b")
    text = cfg.text_config()
    assert (text.num_key_value_heads, text.tie_word_embeddings, text.rope_parameters["rope_theta"]) == (2, True, 1e6)
    vision = cfg.vision_config()
    assert (vision.num_hidden_layers, vision.vision_use_head, vision.intermediate_size) == (26, False, 4304)


@pytest.fixture
def proc():
    return tiny_processor(VideoXLProConfig.from_preset("tiny"))


def test_prompt_is_qwen_chatml(proc):
    assert proc.prompt("Why?") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = proc.tokenize_prompt("Why?")
    assert (ids == -200).sum() == 1
    assert ids[0] == 257  # <|im_start|> is one token
    assert proc.stop_token_ids == [258]  # <|im_end|> is also the byte tokenizer's eos
    with pytest.raises(ValueError, match="the question is empty"):
        proc.tokenize_prompt("  ")


def test_prompt_system_override_and_answer_prefix(proc):
    """A per-question system prompt and an assistant prefill give exactly the ChatML written out by hand."""
    system = "Carefully watch this video."
    expected_text = (
        "<|im_start|>system\nCarefully watch this video.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhich one?<|im_end|>\n<|im_start|>assistant\nBest option:("
    )
    assert proc.prompt("Which one?", system_prompt=system, answer_prefix="Best option:(") == expected_text
    before, after = expected_text.split("<image>")
    tokenize = proc.tokenizer
    expected_ids = (
        tokenize(before, add_special_tokens=False).input_ids
        + [proc.config.image_token_index]
        + tokenize(after, add_special_tokens=False).input_ids
    )
    ids = proc.tokenize_prompt("Which one?", system_prompt=system, answer_prefix="Best option:(")
    assert ids.tolist() == expected_ids
    # The prefix is the last thing in the prompt: its bytes end the ids (the byte tokenizer: one id a byte).
    assert tokenize.decode(ids[-len("Best option:("):].tolist()) == "Best option:("
    # No override: the released template, byte for byte; an empty system prompt is kept empty, not defaulted.
    assert proc.prompt("Why?", system_prompt=None, answer_prefix="") == proc.prompt("Why?")
    assert proc.prompt("Why?", system_prompt="").startswith("<|im_start|>system\n<|im_end|>\n")
    assert proc.tokenize_prompt("Why?", answer_prefix="").tolist() == proc.tokenize_prompt("Why?").tolist()
    with pytest.raises(ValueError, match="<image> may appear only in the question"):
        proc.tokenize_prompt("Why?", answer_prefix="<image>")


def test_time_sequence_ids(proc):
    ids = proc.time_sequence_ids([4.0, 12345.25])
    text0 = proc.tokenizer("Time 0004.0s:", add_special_tokens=False).input_ids
    text1 = proc.tokenizer("Time 12345.2s:", add_special_tokens=False).input_ids
    assert ids.tolist() == text0 + [259] * 9 + text1 + [259] * 9
    assert proc.time_text(4.0) == "Time 0004.0s:"


def test_preprocess_matches_pil_bicubic_and_normalisation(proc):
    frames = random_frames(2, 31, 47)
    pixels = proc.preprocess_frames(frames)
    assert pixels.shape == (2, 3, 98, 98) and pixels.dtype == torch.float32
    manual = np.asarray(Image.fromarray(frames[1]).resize((98, 98), Image.Resampling.BICUBIC)).astype(np.float32)
    expected = (torch.from_numpy(manual).permute(2, 0, 1) / 255.0 - 0.5) / 0.5
    torch.testing.assert_close(pixels[1], expected)
    assert pixels.min() >= -1 and pixels.max() <= 1
    with pytest.raises(ValueError, match="uint8"):
        proc.preprocess_frames(frames.astype(np.float32))


def test_processor_call(proc):
    frames = random_frames(5)
    out = proc("Q?", frames, [0.0, 1.0, 2.0, 3.0, 4.0])
    # 5 frames fill 2 groups: order [0,0,1,2,2,3,4,4] -> groups start at frames 0 and 2.
    assert proc.group_timestamps([0.0, 1.0, 2.0, 3.0, 4.0]).tolist() == [0.0, 2.0]
    assert (out["time_sequence_ids"] == 259).sum() == 18
    with pytest.raises(ValueError, match="5 frames but 4 timestamps"):
        proc("Q?", frames, [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="need their timestamps"):
        proc("Q?", frames)


def test_byte_tokenizer_clock_merges_write_a_clock_in_two_or_three_tokens_and_round_trip(tmp_path):
    """clock_tokens: "37:12" -> "37" ":12", "1:02:03" -> "1" ":02" ":03"; bytes and special ids as without it."""
    from transformers import AutoTokenizer

    from recot.model.processor import VideoXLProProcessor, clock_time
    from recot.model.tokenizer import SPECIAL_TOKENS, build_byte_tokenizer

    plain, clocks = build_byte_tokenizer(), build_byte_tokenizer(clock_tokens=True)
    assert (len(plain), len(clocks)) == (260, 420)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert plain.convert_tokens_to_ids(token) == clocks.convert_tokens_to_ids(token) == 256 + i
    for seconds in range(0, 7300, 7):
        text = clock_time(seconds)
        h, m, s = seconds // 3600, seconds % 3600 // 60, seconds % 60
        expected = [str(h), f":{m:02d}", f":{s:02d}"] if h else [f"{m:02d}", f":{s:02d}"]
        ids = clocks(text, add_special_tokens=False).input_ids
        assert [clocks.decode([i]) for i in ids] == expected and clocks.decode(ids) == text
        assert plain(text, add_special_tokens=False).input_ids == list(text.encode())
    rng = np.random.default_rng(0)
    texts = ["00:00 ocean; 00:17 orange ring", "How many? 123 times, 4567.", "héllo 12:3 :5 99:99"]
    texts += [bytes(rng.integers(32, 127, 60).tolist()).decode() for _ in range(20)]
    clocks.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    for text in texts:
        ids = clocks(text, add_special_tokens=False).input_ids
        assert clocks.decode(ids) == text and plain.decode(plain(text, add_special_tokens=False).input_ids) == text
        assert reloaded(text, add_special_tokens=False).input_ids == ids
    assert clocks("<|im_start|>user\n12", add_special_tokens=False).input_ids == [257, 117, 115, 101, 114, 10, 272]
    processor = VideoXLProProcessor(clocks, VideoXLProConfig.from_preset("lite48"))
    assert processor.time_text_tokens(754) == 2 and processor.time_text_tokens(3725) == 3
