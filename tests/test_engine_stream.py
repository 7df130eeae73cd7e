"""The streaming encoder gives exactly the tokens (and answers) of encoding all frames at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_fixtures import tiny_model, write_video

from recot.engine.stream import FrameCountError, StreamingEncoder, encode_stream
from recot.video import read_frames


def _batches(frames: np.ndarray, times: np.ndarray, size: int):
    for i in range(0, len(frames), size):
        yield frames[i : i + size], np.arange(i, min(i + size, len(frames))), times[i : i + size]


@pytest.mark.parametrize("num_frames", [1, 3, 16, 37, 45, 67])
@pytest.mark.parametrize("batch", [5, 16])
def test_streaming_equals_one_shot_bit_for_bit(num_frames: int, batch: int) -> None:
    # Tiny preset: 4 groups (16 frames) per compressor chunk; 37, 45 and 67 frames put
    # duplicated frames next to chunk boundaries, batch 5 splits chunks across batches.
    model, processor = tiny_model()
    frames = np.random.default_rng(num_frames).integers(0, 256, (num_frames, 98, 98, 3), dtype=np.uint8)
    times = np.arange(num_frames) / 7.0
    streamed = encode_stream(model, processor, _batches(frames, times, batch), num_frames)
    reference = model.encode_video(processor.normalize(torch.from_numpy(frames)), times)
    assert streamed.tokens.shape == reference.tokens.shape
    assert torch.equal(streamed.tokens, reference.tokens)
    assert torch.equal(streamed.timestamps, reference.timestamps)


def test_streaming_same_answer_as_one_shot_on_a_video(tmp_path) -> None:
    model, processor = tiny_model()
    video = write_video(tmp_path / "v.mp4", num_frames=60)
    frames = read_frames(video, num_frames=41, size=98)
    streamed = encode_stream(model, processor, _batches(frames.frames, frames.timestamps, 8), 41)
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
    model, processor = tiny_model()
    chunk = model.config.compressor_batch_size * model.config.frames_per_group
    n, batch = 403, 7
    encoder = StreamingEncoder(model, processor, n)
    frames = np.random.default_rng(0).integers(0, 256, (batch, 98, 98, 3), dtype=np.uint8)
    most = 0
    for start in range(0, n, batch):
        m = min(batch, n - start)
        encoder.add(frames[:m], np.arange(start, start + m), np.arange(start, start + m) / 30)
        most = max(most, len(encoder._pending))
    encoded = encoder.finish()
    assert encoded.tokens.shape == (101, 9, 64)
    assert 0 < most <= chunk + batch


def test_more_than_8192_frames_stream_exactly() -> None:
    # A micro grid (28 px, 1 token per group) keeps 8,195 frames fast; the grouping,
    # duplication and chunking logic is the same as at full size.
    model, processor = tiny_model(image_size=28, grid_size=2, vision_batch_size=64, compressor_batch_size=16)
    n = 8195
    frames = np.random.default_rng(1).integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
    times = np.arange(n) / 30.0
    streamed = encode_stream(model, processor, _batches(frames, times, 100), n)
    reference = model.encode_video(processor.normalize(torch.from_numpy(frames)), times)
    assert streamed.tokens.shape == (2049, 1, 64)
    assert torch.equal(streamed.tokens, reference.tokens)
    assert torch.equal(streamed.timestamps, reference.timestamps)


def test_missing_frames_are_reported() -> None:
    model, processor = tiny_model()
    frames = np.zeros((10, 98, 98, 3), dtype=np.uint8)
    with pytest.raises(FrameCountError, match="planned 12 frames but the source gave 10"):
        encode_stream(model, processor, [(frames, np.arange(10), np.arange(10) / 30)], 12)
    with pytest.raises(FrameCountError, match="planned 8 frames but the source gave 10"):
        encode_stream(model, processor, [(frames, np.arange(10), np.arange(10) / 30)], 8)
    with pytest.raises(ValueError, match="a batch of 10 frames came with 9 indices and 10 timestamps"):
        encode_stream(model, processor, [(frames, np.arange(9), np.arange(10) / 30)], 10)
