"""The streaming encoder: any batching gives exactly the tokens of encoding every chunk on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_fixtures import tiny_model_and_processor, write_video
from recot.model import FrameCountError, GroupPlan, StreamingEncoder
from recot.model.frames import normalize_frames
from recot.video import read_frames


def _stream(model, frames: np.ndarray, times: np.ndarray, batch: int):
    encoder = StreamingEncoder(model, len(frames))
    for i in range(0, len(frames), batch):
        encoder.add(frames[i : i + batch], times[i : i + batch])
    return encoder.finish()


def _chunk_by_chunk(model, processor, frames: np.ndarray, times: np.ndarray):
    """Independent computation: the plan's chunks encoded one by one with encode_groups."""
    plan = GroupPlan.for_config(len(frames), model.config)
    pixels = processor.normalize(torch.from_numpy(frames))
    with torch.no_grad():
        tokens = torch.cat([model.encode_groups(pixels[chunk]).pooled_tokens for chunk in plan.chunks])
    return tokens, torch.as_tensor(times, dtype=torch.float64)[plan.first_frames]


@pytest.mark.parametrize("num_frames", [1, 3, 16, 37, 45, 67])
@pytest.mark.parametrize("batch", [5, 16])
def test_streaming_equals_chunk_by_chunk_bit_for_bit(num_frames: int, batch: int) -> None:
    # Tiny preset: 4 groups (16 frames) per compressor chunk; 37, 45 and 67 frames put
    # duplicated frames next to chunk boundaries, batch 5 splits chunks across batches.
    model, processor = tiny_model_and_processor()
    frames = np.random.default_rng(num_frames).integers(0, 256, (num_frames, 98, 98, 3), dtype=np.uint8)
    times = np.arange(num_frames) / 7.0
    streamed = _stream(model, frames, times, batch)
    tokens, group_times = _chunk_by_chunk(model, processor, frames, times)
    assert streamed.tokens.shape == tokens.shape == (GroupPlan(num_frames).num_groups, 9, 64)
    assert torch.equal(streamed.tokens, tokens)
    assert torch.equal(streamed.timestamps, group_times)
    # encode_video is the same encoder fed one batch, from uint8 frames or from pixel values.
    assert torch.equal(model.encode_video(torch.from_numpy(frames), times).tokens, tokens)
    assert torch.equal(model.encode_video(processor.normalize(torch.from_numpy(frames)), times).tokens, tokens)


def test_normalize_frames_matches_the_formula() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = normalize_frames(frames, mean=[0.1, 0.2, 0.3], std=[0.5, 0.25, 2.0])
    expected = (frames.transpose(0, 3, 1, 2) / 255.0 - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array(
        [0.5, 0.25, 2.0]
    )[:, None, None]
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert normalize_frames(frames, [0.5] * 3, [0.5] * 3, torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="frames must be uint8 RGB"):
        normalize_frames(frames.astype(np.float32), [0.5] * 3, [0.5] * 3)


def test_streaming_same_answer_as_pixel_values_on_a_video(tmp_path) -> None:
    model, processor = tiny_model_and_processor()
    video = write_video(tmp_path / "v.mp4", num_frames=60)
    frames = read_frames(video, num_frames=41, size=98)
    streamed = _stream(model, frames.frames, frames.timestamps, 8)
    ids = processor.tokenize_prompt("What colour is the sky?")
    time_ids = processor.time_sequence_ids(streamed.timestamps)
    kwargs = {"max_new_tokens": 12, "eos_token_id": 258, "pad_token_id": 256, "keep_ratio": 0.5}
    answer_streamed = model.generate(ids, encoded=streamed, time_sequence_ids=time_ids, **kwargs)
    pixels = processor.normalize(torch.from_numpy(frames.frames))
    answer_one_shot = model.generate(ids, pixel_values=pixels, timestamps=frames.timestamps, time_sequence_ids=time_ids, **kwargs)
    assert answer_streamed.shape[-1] == 12
    assert torch.equal(answer_streamed, answer_one_shot)


def test_buffered_frames_stay_bounded() -> None:
    # Peak memory must not grow with the video: the encoder holds at most one chunk
    # plus one decode batch of frames, whatever the length.
    model, _ = tiny_model_and_processor()
    chunk = model.config.compressor_batch_size * model.config.frames_per_group
    n, batch = 403, 7
    encoder = StreamingEncoder(model, n)
    frames = np.random.default_rng(0).integers(0, 256, (batch, 98, 98, 3), dtype=np.uint8)
    most = 0
    for start in range(0, n, batch):
        m = min(batch, n - start)
        encoder.add(frames[:m], np.arange(start, start + m) / 30)
        most = max(most, len(encoder._pending))
    encoded = encoder.finish()
    assert encoded.tokens.shape == (101, 9, 64)
    assert 0 < most <= chunk + batch


@pytest.mark.slow
def test_more_than_8192_frames_stream_exactly() -> None:
    # A micro grid (28 px, 1 token per group) keeps 8,195 frames fast; the grouping,
    # duplication and chunking logic is the same as at full size.
    model, processor = tiny_model_and_processor(image_size=28, grid_size=2, vision_batch_size=64, compressor_batch_size=16)
    n = 8195
    frames = np.random.default_rng(1).integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
    times = np.arange(n) / 30.0
    streamed = _stream(model, frames, times, 100)
    tokens, group_times = _chunk_by_chunk(model, processor, frames, times)
    assert streamed.tokens.shape == (2049, 1, 64)
    assert torch.equal(streamed.tokens, tokens)
    assert torch.equal(streamed.timestamps, group_times)


def test_frame_count_errors() -> None:
    model, _ = tiny_model_and_processor()
    frames = np.zeros((10, 98, 98, 3), dtype=np.uint8)
    encoder = StreamingEncoder(model, 12)
    encoder.add(frames, np.arange(10) / 30)
    with pytest.raises(FrameCountError, match="planned 12 frames but the source gave 10"):
        encoder.finish()
    with pytest.raises(FrameCountError, match="planned 8 frames but the source gave 10"):
        StreamingEncoder(model, 8).add(frames, np.arange(10) / 30)
    with pytest.raises(ValueError, match="a batch of 10 frames came with 9 timestamps"):
        StreamingEncoder(model, 10).add(frames, np.arange(9) / 30)


def test_group_plan() -> None:
    plan = GroupPlan(num_frames=10, frames_per_group=4, groups_per_chunk=2)
    # 10 frames: 2 duplicated in place, evenly spaced (frames 2 and 7).
    assert plan.order.tolist() == [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9]
    assert plan.num_groups == 3 and [c.tolist() for c in plan.chunks] == [[0, 1, 2, 2, 3, 4, 5, 6], [7, 7, 8, 9]]
    assert plan.group_timestamps(torch.arange(10.0)).tolist() == [0.0, 3.0, 7.0]
    with pytest.raises(ValueError, match="10 frames but 9 timestamps"):
        plan.group_timestamps(torch.arange(9.0))
