"""Throughput features of the engine: decoding overlapped with encoding, parallel decoding, pinned uploads,
``compile=True`` and the released operating point (``max_visual_tokens="all"``)."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import warnings

import av
import numpy as np
import pytest
import torch

import recot.engine.chat as chat_module
from engine_fixtures import tiny_model_and_processor
from recot.cli import main
from recot.config import VideoXLProConfig
from recot.engine import BeyondContextWarning, FrameSampling, GenerationOptions, VideoChat
from recot.engine.chat import _host_frames
from recot.engine.memory import QWEN25_TIME_TEXT_TOKENS, plan_memory
from recot.model.encoder import StreamingEncoder
from recot.model.selector import context_budget, num_kept
from recot.video import CorruptVideoError, FrameBatch, PartialDecodeWarning, parallel
from video_fixtures import write_video

TINY_FRAME_BYTES = 98 * 98 * 3  # the tiny preset's image size


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """120 frames in GOPs of 20 with B-frames, and a copy with packets 50-58 overwritten."""
    root = tmp_path_factory.mktemp("throughput")
    clean = write_video(root / "gops.mp4", n=120, options={"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=2"})
    with av.open(str(clean)) as c:
        spans = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size and p.pos is not None][50:58]
    data = bytearray(clean.read_bytes())
    for pos, size in spans:
        data[pos : pos + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    damaged = root / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    return {"clean": clean, "damaged": damaged}


@pytest.fixture
def no_leaks():
    yield
    assert [t.name for t in threading.enumerate() if t.name.startswith("recot-prefetch")] == []
    assert multiprocessing.active_children() == []


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 6 frames at the tiny preset's size, so a short video is decoded by several workers."""
    monkeypatch.setattr(parallel, "PIECE_BYTES", TINY_FRAME_BYTES * 6)
    monkeypatch.setattr(parallel, "MIN_PIECE_FRAMES", 1)


def _chat(**kwargs: object) -> VideoChat:
    model, processor = tiny_model_and_processor()
    return VideoChat(model, processor, **kwargs)


# ----- overlap and parallel decoding ---------------------------------------------------
@pytest.mark.parametrize("name", ["clean", "damaged"])
@pytest.mark.parametrize("sampling", [FrameSampling(fps=30), FrameSampling(num_frames=37), FrameSampling(num_frames=150)])
def test_parallel_decoding_gives_the_same_encoding(clips, small_pieces, no_leaks, name, sampling):
    with warnings.catch_warnings(record=True) as one_warnings:
        warnings.simplefilter("always")
        one = _chat(decode_workers=1).encode(clips[name], sampling)
    with warnings.catch_warnings(record=True) as two_warnings:
        warnings.simplefilter("always")
        two = _chat(decode_workers=2).encode(clips[name], sampling)
    assert two.frame_indices == one.frame_indices
    assert torch.equal(two.encoded.tokens, one.encoded.tokens)
    assert torch.equal(two.encoded.timestamps, one.encoded.timestamps)
    one_partial = [str(w.message) for w in one_warnings if issubclass(w.category, PartialDecodeWarning)]
    two_partial = [str(w.message) for w in two_warnings if issubclass(w.category, PartialDecodeWarning)]
    assert len(one_partial) == len(two_partial)  # the decoder's warning and the engine's gap-filling warning
    assert [m for m in one_partial if "replaced by the nearest" in m] == [m for m in two_partial if "replaced by the nearest" in m]
    if name == "damaged" and sampling.fps:
        assert len(set(one.frame_indices)) < len(one.frame_indices)  # frames were missing and filled in


def test_decoding_runs_ahead_of_encoding(clips, monkeypatch, no_leaks):
    produced = []
    second_batch_decoded = threading.Event()
    real_decoder = chat_module.iter_frames_parallel

    def recording(*args, **kwargs):
        for batch in real_decoder(*args, **kwargs):
            produced.append(threading.current_thread().name)
            if len(produced) == 2:
                second_batch_decoded.set()
            yield batch

    waited = []
    real_add = StreamingEncoder.add

    def add(self, frames, timestamps):
        if not waited:  # while the encoder holds the first batch, the decoder makes the second one
            waited.append(second_batch_decoded.wait(timeout=20))
        real_add(self, frames, timestamps)

    monkeypatch.setattr(chat_module, "iter_frames_parallel", recording)
    monkeypatch.setattr(StreamingEncoder, "add", add)
    encoding = _chat(decode_workers=1).encode(clips["clean"], FrameSampling(num_frames=48))  # 3 batches of 16
    assert waited == [True] and encoding.num_frames == 48
    assert set(produced) == {"recot-prefetch"} and len(produced) == 3


def test_a_decoding_error_reaches_the_caller_and_stops_everything(videos, small_pieces, no_leaks):
    chat = _chat(decode_workers=2)
    with pytest.raises(CorruptVideoError, match="none of the 27 planned frames could be decoded"):
        chat.encode(videos["corrupt_tail_avi"], FrameSampling(fps=30, start=2.1))  # MJPEG, packets 60.. overwritten


def test_an_encoding_error_stops_the_decoder(clips, small_pieces, monkeypatch, no_leaks):
    def failing(self, frames, timestamps):
        raise RuntimeError("the encoder failed")

    monkeypatch.setattr(StreamingEncoder, "add", failing)
    with pytest.raises(RuntimeError, match="the encoder failed"):
        _chat(decode_workers=2).encode(clips["clean"], FrameSampling(fps=30))


def test_decode_workers_must_be_positive():
    with pytest.raises(ValueError, match="decode_workers must be >= 1, got 0"):
        _chat(decode_workers=0)


def test_host_frames_are_shared_on_cpu_and_pinned_for_cuda():
    batch = FrameBatch(np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3), np.arange(2), np.array([0.0, 0.5]))
    frames, times = _host_frames(batch, pin=False)
    assert frames.dtype == torch.uint8 and frames.data_ptr() == batch.frames.ctypes.data  # no copy
    assert times is batch.timestamps
    if not torch.cuda.is_available():
        pytest.skip("pinning needs CUDA")
    pinned, _ = _host_frames(batch, pin=True)
    assert pinned.is_pinned() and torch.equal(pinned, frames)


# ----- torch.compile ------------------------------------------------------------------------
@pytest.mark.slow
def test_compiled_encoder_matches_eager():
    eager = _chat()
    frames = np.random.default_rng(0).integers(0, 256, (20, 98, 98, 3), dtype=np.uint8)
    times = np.arange(20) / 2.0
    with torch.inference_mode():
        expected = eager.model.encode_video(torch.from_numpy(frames), times)
    compiled = _chat(compile=True)
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            got = compiled.model.encode_video(torch.from_numpy(frames), times)
    except Exception as e:  # noqa: BLE001  (inductor needs a working C++ toolchain)
        if "BackendCompilerFailed" in type(e).__name__ or "InductorError" in type(e).__name__:
            pytest.skip(f"torch.compile cannot compile on this machine: {type(e).__name__}")
        raise
    print(f"compiled in {time.perf_counter() - started:.1f} s")
    assert compiled.model.vision_tower._compiled_call_impl is not None
    assert compiled.model.compressor._compiled_call_impl is not None
    assert set(compiled.model.state_dict()) == set(eager.model.state_dict())  # checkpoints and cache keys unchanged
    torch.testing.assert_close(got.tokens, expected.tokens, rtol=1.6e-2, atol=1e-2)  # bf16 tolerance
    assert torch.equal(got.timestamps, expected.timestamps)


# ----- the released operating point: max_visual_tokens="all" ------------------------------------
def test_all_visual_tokens_go_past_the_context_with_a_warning(clips):
    model, processor = tiny_model_and_processor(max_position_embeddings=300)
    chat = VideoChat(model, processor)
    encoding = chat.encode(clips["clean"], FrameSampling(num_frames=64))  # 16 groups x 9 = 144 visual tokens
    capped = chat.ask(encoding, "Why?", GenerationOptions(max_new_tokens=8, keep_ratio=1.0))
    prompt = len(processor.tokenize_prompt("Why?")) - 1
    room = 300 - prompt - 16 * 13 - 8
    assert capped.visual_tokens_kept == room and capped.llm_input_tokens + 8 == 300
    with pytest.warns(BeyondContextWarning) as caught:
        full = chat.ask(encoding, "Why?", GenerationOptions(max_new_tokens=8, keep_ratio=1.0, max_visual_tokens="all"))
    assert full.visual_tokens_kept == 144 == num_kept(model.config, 144, 1.0, None)
    assert full.llm_input_tokens == capped.llm_input_tokens - room + 144
    overflow = full.llm_input_tokens + 8 - 300
    assert f"run {overflow} tokens past the 300-token context" in str(caught[0].message)
    with pytest.warns(BeyondContextWarning, match="keeps 72 of 144 visual tokens"):
        ratio = chat.ask(encoding, "Why?", GenerationOptions(max_new_tokens=8, keep_ratio=0.5, max_visual_tokens="all"))
    assert ratio.visual_tokens_kept == 72
    with warnings.catch_warnings():  # inside the context: no warning
        warnings.simplefilter("error", BeyondContextWarning)
        small = chat.ask(chat.encode(clips["clean"], FrameSampling(num_frames=4)), "Why?",
                         GenerationOptions(max_new_tokens=8, max_visual_tokens="all"))  # fmt: skip
    assert small.visual_tokens_kept == num_kept(model.config, 9, model.config.keep_ratio, None)


@pytest.mark.parametrize(
    ("value", "message"),
    [("some", "must be a positive number or 'all', got 'some'"), (True, "got True"), (0, "must be >= 1, got 0")],
)
def test_visual_token_limit_is_validated(value, message):
    with pytest.raises(ValueError, match=message):
        GenerationOptions(max_visual_tokens=value)


def test_visual_token_limit_flag():
    import argparse

    from recot.cli import visual_token_limit
    from recot.model.selector import ALL_VISUAL_TOKENS

    assert visual_token_limit("all") == visual_token_limit(" ALL ") == ALL_VISUAL_TOKENS
    assert visual_token_limit("16384") == 16384
    for bad in ("0", "-3", "lots", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected an integer >= 1 or 'all'"):
            visual_token_limit(bad)


def test_context_budget_all_is_uncapped():
    config = VideoXLProConfig.from_preset("tiny", max_position_embeddings=300)
    assert context_budget(config, 50, 1000, 8, "all") is None  # even when the timestamps alone overflow
    assert context_budget(config, 50, 100, 8, None) == 142
    with pytest.raises(ValueError, match="leave no room"):
        context_budget(config, 50, 1000, 8, None)


def test_context_budget_takes_the_models_default_and_counts_only_kept_groups_times():
    """config.max_visual_tokens is the budget when none is asked; with drop_empty_group_times, k kept tokens bring
    at most k groups' time texts, so 1000 tokens of timestamps no longer leave no room."""
    config = VideoXLProConfig.from_preset("tiny", max_position_embeddings=300, max_visual_tokens=40)
    assert context_budget(config, 50, 100, 8, None) == 40
    assert context_budget(config, 50, 100, 8, 100) == 100  # an asked budget wins, up to the room of 142
    assert context_budget(config, 50, 100, 8, "all") is None
    dropping = VideoXLProConfig.from_preset("tiny", max_position_embeddings=300, drop_empty_group_times=True)
    assert context_budget(dropping, 50, 1000, 8, None, longest_group_time=13) == (300 - 50 - 8) // 14 == 17
    assert context_budget(dropping, 50, 100, 8, None, longest_group_time=13) == 142  # all the texts fit beside more
    with pytest.raises(ValueError, match="leave no room for visual tokens"):
        context_budget(dropping, 50, 1000, 8, None)  # without the longest text, every text is counted
    with pytest.raises(ValueError, match="no room for one visual token and its timestamp .* ask a shorter question"):
        context_budget(dropping, 280, 1000, 8, None, longest_group_time=13)
    with pytest.raises(ValueError, match="max_visual_tokens=0 must be at least 1"):
        VideoXLProConfig.from_preset("tiny", max_visual_tokens=0)


def test_memory_plan_of_the_released_operating_point():
    config = VideoXLProConfig.from_preset("videoxl-pro-3b")
    capped = plan_memory(config, 8192, QWEN25_TIME_TEXT_TOKENS, dtype="bfloat16")
    full = plan_memory(config, 8192, QWEN25_TIME_TEXT_TOKENS, dtype="bfloat16", max_visual_tokens="all")
    assert capped.beyond_context == 0 and capped.llm_input_tokens + 128 <= 32768
    visual = 2048 * 144
    assert full.visual_tokens_kept == int(visual * 0.85) // 16 * 16 == 250_672
    assert full.llm_input_tokens == 64 + 2048 * QWEN25_TIME_TEXT_TOKENS + 250_672
    assert full.beyond_context == full.llm_input_tokens + 128 - 32768
    # The KV cache grows with the kept tokens: 36 layers x 2 (K, V) x 2 KV heads x 128 x 2 bytes per token.
    assert full.answer["kv_cache"] == 2 * 36 * (full.llm_input_tokens + 128) * 2 * 128 * 2
    assert full.answer_peak > capped.answer_peak and full.encode_peak == capped.encode_peak
    assert full.to_dict()["beyond_context"] == full.beyond_context


def _run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:  # argparse rejects a value
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_and_ask_command_line(capsys, clips, tmp_path):
    code, out, _ = _run(capsys, "plan", "--frames", "8192", "--model", "videoxl-pro-3b", "--device", "cuda",
                        "--max-visual-tokens", "all", "--json")  # fmt: skip
    plan = json.loads(out)
    assert code == 0 and plan["visual_tokens_kept"] == 250_672 and plan["beyond_context"] > 0
    code, out, _ = _run(capsys, "plan", "--frames", "8192", "--model", "videoxl-pro-3b", "--max-visual-tokens", "all")
    assert code == 0 and f"run {plan['beyond_context']} tokens past the model's 32768-token context" in out
    code, _, err = _run(capsys, "plan", "--frames", "8", "--max-visual-tokens", "lots")
    assert code == 2 and "argument --max-visual-tokens: expected an integer >= 1 or 'all', got 'lots'" in err

    model, processor = tiny_model_and_processor(max_position_embeddings=300)
    model.save_pretrained(tmp_path / "model", tokenizer=processor.tokenizer)
    argv = ["ask", clips["clean"], "Why?", "--model", tmp_path / "model", "--frames", "64", "--max-new-tokens", "4",
            "--no-cache", "--no-progress", "--json", "--keep-ratio", "1.0", "--decode-workers", "2"]  # fmt: skip
    code, out, err = _run(capsys, *argv, "--max-visual-tokens", "all")
    assert code == 0, err
    assert "recot ask: warning:" in err and "run 118 tokens past the 300-token context" in err
    assert json.loads(out)["visual_tokens_kept"] == 144
    code, out, err = _run(capsys, *argv)
    assert code == 0 and json.loads(out)["visual_tokens_kept"] < 144  # the default stays capped
    code, _, err = _run(capsys, "ask", clips["clean"], "Why?", "--decode-workers", "0")
    assert code == 2 and "argument --decode-workers: must be >= 1, got 0" in err


def test_video_frames_decode_workers(capsys, clips, tmp_path, small_pieces):
    code, out, err = _run(capsys, "video", "frames", clips["clean"], "--out", tmp_path / "two", "--fps", "10",
                          "--size", "98", "--decode-workers", "2")  # fmt: skip
    assert code == 0, err
    code, out, err = _run(capsys, "video", "frames", clips["clean"], "--out", tmp_path / "one", "--fps", "10",
                          "--size", "98", "--decode-workers", "1")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "two" / "timestamps.csv").read_text() == (tmp_path / "one" / "timestamps.csv").read_text()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    code, _, err = _run(capsys, "video", "frames", clips["clean"], "--out", tmp_path / "x", "--fps", "1", "--decode-workers", "0")
    assert code == 2 and "argument --decode-workers: must be >= 1, got 0" in err
