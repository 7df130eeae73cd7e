"""VideoChat: per-question selection within the token budget, batches, sampling, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine_fixtures import CallCounter, tiny_chat, tiny_model_and_processor, write_video
from recot.engine import FrameGapFiller, FrameSampling, GenerationOptions, VideoChat
from recot.model.checkpoint import CheckpointError
from recot.video import FrameBatch, NotAVideoError, PartialDecodeWarning, VideoNotFoundError, read_frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("videos")
    return write_video(root / "a.mp4", num_frames=60), write_video(root / "b.mp4", num_frames=45, seed=3)


def _kept_counts(chat: VideoChat) -> list[int]:
    kept: list[int] = []
    chat.model.selector.register_forward_hook(lambda m, a, out: kept.append(len(out.kept_visual)))
    return kept


def test_visual_token_budget_is_respected(videos) -> None:
    chat = tiny_chat(None)
    kept = _kept_counts(chat)
    encoding = chat.encode(videos[0], FrameSampling(num_frames=40))  # 10 groups x 9 = 90 visual tokens
    full = chat.ask(encoding, "Describe it.", GenerationOptions(max_new_tokens=4, keep_ratio=1.0))
    assert (full.visual_tokens, full.visual_tokens_kept, kept[-1]) == (90, 90, 90)
    capped = chat.ask(encoding, "Describe it.", GenerationOptions(max_new_tokens=4, keep_ratio=1.0, max_visual_tokens=25))
    assert capped.visual_tokens_kept == kept[-1] == 25
    assert capped.llm_input_tokens == full.llm_input_tokens - 65
    ratio = chat.ask(encoding, "Describe it.", GenerationOptions(max_new_tokens=4, keep_ratio=0.5, max_visual_tokens=80))
    assert ratio.visual_tokens_kept == kept[-1] == 45


def test_models_default_budget_and_dropped_times_give_the_exact_llm_input(videos) -> None:
    """A model with max_visual_tokens=7 keeps 7 visual tokens unless asked otherwise; with drop_empty_group_times
    the LLM input holds the time texts (13 tokens) of the groups those 7 come from, and the answer says so."""
    chat = tiny_chat(None, max_visual_tokens=7, drop_empty_group_times=True)
    selections = []
    chat.model.selector.register_forward_hook(lambda m, a, out: selections.append(out))
    encoding = chat.encode(videos[0], FrameSampling(num_frames=40))  # 10 groups x 9 = 90 visual tokens
    answer = chat.ask(encoding, "Describe it.", GenerationOptions(max_new_tokens=4, keep_ratio=1.0))
    groups = {i // 9 for i in selections[-1].kept_visual.tolist()}
    prompt = len(chat.processor.tokenize_prompt("Describe it.")) - 1
    assert answer.visual_tokens_kept == len(selections[-1].kept_visual) == 7
    assert answer.llm_input_tokens == prompt + 7 + 13 * len(groups) < prompt + 7 + 13 * 10
    asked = chat.ask(encoding, "Describe it.", GenerationOptions(max_new_tokens=4, keep_ratio=1.0, max_visual_tokens=25))
    assert asked.visual_tokens_kept == 25


def test_budget_is_capped_by_the_context(tmp_path) -> None:
    # 16 groups: 16 x 13 time-text tokens + ~60 prompt tokens + 8 new leave 300 - 276 = 24 visual tokens.
    video = write_video(tmp_path / "long.mp4", num_frames=96)
    model, processor = tiny_model_and_processor(max_position_embeddings=300)
    chat = VideoChat(model, processor)
    kept = _kept_counts(chat)
    answer = chat.ask(video, "Why?", GenerationOptions(max_new_tokens=8, keep_ratio=1.0), FrameSampling(num_frames=64))
    prompt = len(processor.tokenize_prompt("Why?")) - 1
    room = 300 - prompt - 16 * 13 - 8
    assert answer.visual_tokens_kept == kept[-1] == room
    assert answer.llm_input_tokens + 8 == 300
    with pytest.raises(ValueError, match="leave no room for visual tokens in the model's context of 300; sample fewer frames"):
        chat.ask(video, "Why?", GenerationOptions(max_new_tokens=8), FrameSampling(num_frames=90))


def test_ask_many_encodes_each_video_once(videos) -> None:
    chat = tiny_chat(None)
    counter = CallCounter(chat.model.vision_tower)
    items = [(videos[0], "One?"), (videos[1], "Two?"), (videos[0], "Three?")]
    answers = chat.ask_many(items, GenerationOptions(max_new_tokens=5), FrameSampling(num_frames=20))
    assert counter.frames == 40  # 20 frames of each video, once
    assert [a.question for a in answers] == ["One?", "Two?", "Three?"]
    assert [a.video for a in answers] == [str(videos[0]), str(videos[1]), str(videos[0])]
    single = chat.ask(videos[0], "Three?", GenerationOptions(max_new_tokens=5), FrameSampling(num_frames=20))
    assert answers[2].token_ids == single.token_ids
    assert answers[0].timings.encode > 0 and answers[2].timings.encode == 0


def test_system_prompt_and_answer_prefix_reach_the_model(videos) -> None:
    """ask/ask_many feed the overridden prompt to generation and return only the continuation."""
    chat = tiny_chat(None)
    encoding = chat.encode(videos[0], FrameSampling(num_frames=16))
    seen: list[list[int]] = []
    generate = chat.model.generate

    def recording_generate(input_ids, **kw):
        seen.append(torch.as_tensor(input_ids).flatten().tolist())
        return generate(input_ids, **kw)

    chat.model.generate = recording_generate
    options = GenerationOptions(max_new_tokens=3, keep_ratio=1.0)
    plain = chat.ask(encoding, "Which?", options)
    prefixed = chat.ask(encoding, "Which?", options, system_prompt="Be exact.", answer_prefix="Best option:(")
    expected = chat.processor.tokenize_prompt("Which?", system_prompt="Be exact.", answer_prefix="Best option:(")
    assert seen[0] == chat.processor.tokenize_prompt("Which?").tolist()
    assert seen[1] == expected.tolist()
    assert chat.processor.tokenizer.decode(seen[1][-13:]) == "Best option:("
    # The answer is the generated ids decoded, without the prefix; the prompt cost includes the prefix.
    assert prefixed.answer == chat.processor.decode(torch.tensor(prefixed.token_ids))
    assert not prefixed.answer.startswith("Best option")
    assert prefixed.llm_input_tokens - plain.llm_input_tokens == len(expected) - len(seen[0])
    many = chat.ask_many([(videos[0], "Which?")], options, FrameSampling(num_frames=16),
                         system_prompt="Be exact.", answer_prefix="Best option:(")  # fmt: skip
    assert seen[2] == expected.tolist() and many[0].token_ids == prefixed.token_ids


def test_sampling_is_seeded(videos) -> None:
    chat = tiny_chat(None)
    encoding = chat.encode(videos[0], FrameSampling(num_frames=16))

    def ask(**kw: object) -> list[int]:
        options = GenerationOptions(max_new_tokens=24, do_sample=True, temperature=2.0, **kw)
        return chat.ask(encoding, "Sample something.", options).token_ids

    torch.manual_seed(123)
    outside = torch.rand(1)
    assert ask(seed=1) == ask(seed=1)
    assert ask(seed=1) != ask(seed=2)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), outside), "asking must not disturb the caller's random state"
    greedy = chat.ask(encoding, "Sample something.", GenerationOptions(max_new_tokens=24)).token_ids
    assert greedy == chat.ask(encoding, "Sample something.", GenerationOptions(max_new_tokens=24, seed=9)).token_ids


def test_default_sampling_is_one_frame_a_second(videos) -> None:
    chat = tiny_chat(None)
    plan = chat.plan(videos[0])  # 60 frames at 30 fps = 2 s
    assert plan.indices.tolist() == [0, 30]
    assert chat.encode(videos[0]).num_frames == 2


def test_bad_inputs_give_clear_errors(tmp_path, videos) -> None:
    chat = tiny_chat(None)
    with pytest.raises(ValueError, match="the question is empty"):
        chat.ask(videos[0], "   ")
    with pytest.raises(ValueError, match="item 1: the question is empty"):
        chat.ask_many([(videos[0], "ok"), (videos[0], "")])
    with pytest.raises(VideoNotFoundError, match="missing.mp4: no such file"):
        chat.ask(tmp_path / "missing.mp4", "What?")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(NotAVideoError, match="junk.mp4"):
        chat.ask(junk, "What?")
    with pytest.raises(CheckpointError, match="does not exist"):
        VideoChat.from_pretrained(tmp_path / "no-model")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read model config"):
        VideoChat.from_pretrained(tmp_path / "broken")
    encoding = chat.encode(videos[0], FrameSampling(num_frames=8))
    with pytest.raises(ValueError, match="sampling applies to a video file"):
        chat.ask(encoding, "Why?", None, FrameSampling(num_frames=4))
    with pytest.raises(ValueError, match="max_visual_tokens must be >= 1, got 0"):
        GenerationOptions(max_visual_tokens=0)
    for bad, message in [
        ({"keep_ratio": 0.0}, "keep_ratio must be in \\(0, 1\\], got 0.0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1, got 0"),
        ({"do_sample": True, "temperature": 0.0}, "temperature must be > 0 when sampling, got 0.0"),
        ({"top_p": 1.5}, "top_p must be in \\(0, 1\\], got 1.5"),
    ]:
        with pytest.raises(ValueError, match=message):
            GenerationOptions(**bad)
    for bad, message in [
        ({"num_frames": 0}, "num_frames must be >= 1, got 0"),
        ({"fps": 1.0, "max_frames": 0}, "max_frames must be >= 1, got 0"),
        ({"fps": 0.0}, "fps must be > 0, got 0.0"),
        ({"num_frames": 4, "fps": 1.0}, "give num_frames or fps, not both"),
        ({"start": 5.0, "end": 2.0}, "end \\(2.0\\) must be after start \\(5.0\\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            FrameSampling(**bad)


def test_from_pretrained_round_trip_and_weights_id(tmp_path, videos) -> None:
    model, processor = tiny_model_and_processor()
    model.save_pretrained(tmp_path / "m", tokenizer=processor.tokenizer)
    loaded = VideoChat.from_pretrained(tmp_path / "m")
    in_memory = VideoChat(model, processor)
    options, sampling = GenerationOptions(max_new_tokens=6), FrameSampling(num_frames=12)
    assert loaded.ask(videos[1], "Same?", options, sampling).token_ids == in_memory.ask(videos[1], "Same?", options, sampling).token_ids
    first_id = loaded.model_id
    with torch.no_grad():
        model.compressor.temporal_encoding[0, 0] += 1.0
    model.save_pretrained(tmp_path / "m", tokenizer=processor.tokenizer)
    assert VideoChat.from_pretrained(tmp_path / "m").model_id != first_id


def _batch(indices: list[int]) -> FrameBatch:
    frames = np.stack([np.full((2, 2, 3), i, dtype=np.uint8) for i in indices]) if indices else np.empty((0, 2, 2, 3), np.uint8)
    return FrameBatch(frames, np.array(indices, dtype=np.int64), np.array(indices, dtype=np.float64) / 10)


def test_gap_filler_replaces_missing_frames_by_their_neighbours() -> None:
    filler = FrameGapFiller(np.array([0, 5, 10, 15, 20, 25]))
    first = filler.fill(_batch([5, 10]))  # frame 0 failed: it takes the next decoded frame
    second = filler.fill(_batch([20]))  # frame 15 failed: it takes the previous one
    tail = filler.finish()  # frame 25 failed, at the end
    out = FrameBatch.concat([first, second, tail])
    assert out.indices.tolist() == [5, 5, 10, 10, 20, 20] == filler.source_indices.tolist()
    assert out.frames[:, 0, 0, 0].tolist() == [5, 5, 10, 10, 20, 20]
    assert out.timestamps.tolist() == [0.5, 0.5, 1.0, 1.0, 2.0, 2.0]
    assert filler.missing == 3
    complete = FrameGapFiller(np.array([1, 2]))
    batch = _batch([1, 2])
    assert complete.fill(batch) is batch and len(complete.finish()) == 0 and complete.missing == 0
    assert FrameGapFiller(np.array([1, 2])).finish() is None  # nothing decoded at all
    with pytest.raises(ValueError, match="the decoder returned frame 7, which is not in the plan"):
        FrameGapFiller(np.array([1, 2])).fill(_batch([7]))


def test_a_damaged_video_is_decoded_once(tmp_path, videos, monkeypatch) -> None:
    import recot.engine.chat as chat_module

    calls = []
    real_iter_frames = chat_module.iter_frames_parallel

    def dropping(path, plan, **kwargs):
        calls.append(path)
        for batch in real_iter_frames(path, plan, **kwargs):
            keep = np.isin(batch.indices, plan.indices[[3, 4, 9]], invert=True)  # three frames "fail"
            yield FrameBatch(batch.frames[keep], batch.indices[keep], batch.timestamps[keep])

    chat = tiny_chat(None)
    sampling = FrameSampling(num_frames=12)
    clean = chat.encode(videos[0], sampling)
    monkeypatch.setattr(chat_module, "iter_frames_parallel", dropping)
    with pytest.warns(PartialDecodeWarning, match="3 of 12 planned frames could not be decoded"):
        damaged = chat.encode(videos[0], sampling)
    assert len(calls) == 1
    planned = chat.plan(videos[0], sampling).indices
    assert damaged.frame_indices == planned[[0, 1, 2, 2, 2, 5, 6, 7, 8, 8, 10, 11]].tolist()
    # The tokens are those of the filled-in frames, encoded directly.
    frames = read_frames(videos[0], num_frames=12, size=chat.model.config.image_size)
    filled = [0, 1, 2, 2, 2, 5, 6, 7, 8, 8, 10, 11]
    expected = chat.model.encode_video(torch.from_numpy(frames.frames[filled]), frames.timestamps[filled])
    assert torch.equal(damaged.encoded.tokens, expected.tokens)
    assert not torch.equal(damaged.encoded.tokens, clean.encoded.tokens)
