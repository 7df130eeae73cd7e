"""Bad input: each failure is a typed VideoDecodeError naming the file and the cause."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from recot.video import (
    CorruptVideoError,
    DecodeTimeoutError,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    PartialDecodeWarning,
    UnsupportedVideoError,
    VideoDecodeError,
    VideoNotFoundError,
    iter_frames,
    plan_frames,
    probe,
    read_frames,
)
from video_fixtures import frame_id


@pytest.mark.parametrize(
    ("name", "error", "cause"),
    [
        ("random_mp4", NotAVideoError, "FFmpeg cannot read it as a video"),
        ("truncated_mp4", NotAVideoError, "header is missing or truncated"),
        ("audio_m4a", NoVideoStreamError, r"has no video stream \(found: audio\)"),
        ("empty_mkv", EmptyVideoError, "holds a header and no data"),
        ("corrupt_avi", CorruptVideoError, "none of its 90 video packets decodes"),
        ("absurd_avi", UnsupportedVideoError, "20000x8 exceeds the 16384-pixel limit"),
    ],
)
def test_bad_files_raise_typed_errors(videos, name, error, cause):
    with pytest.raises(error, match=cause) as e:
        probe(videos[name])
    assert isinstance(e.value, VideoDecodeError)
    assert e.value.path == str(videos[name]) and str(e.value).startswith(f"{videos[name]}: ")


def test_missing_file(tmp_path):
    with pytest.raises(VideoNotFoundError, match="no such file") as e:
        read_frames(tmp_path / "nope.mp4", num_frames=2)
    assert e.value.path == str(tmp_path / "nope.mp4")


def test_zero_byte_file(tmp_path):
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(EmptyVideoError, match="empty"):
        probe(tmp_path / "zero.mp4")


def test_not_an_image(tmp_path):
    (tmp_path / "fake.jpg").write_text("hello")
    with pytest.raises(NotAVideoError, match="not a readable image"):
        probe(tmp_path / "fake.jpg")


def test_truncated_file_decodes_its_start_with_warning(videos):
    with pytest.warns(PartialDecodeWarning, match=r"declares 3.00 s but its video data ends at 1.50 s"):
        info = probe(videos["truncated_mkv"])
    frames = [f for batch in iter_frames(info.path, plan_frames(info), batch_size=16) for f in batch.frames]
    assert [frame_id(f) for f in frames] == list(range(45))


def test_damaged_middle_returns_decodable_frames_and_says_where_it_stopped(videos):
    path = videos["corrupt_tail_avi"]  # packets from frame 60 on are garbage
    with pytest.warns(PartialDecodeWarning, match=r"decoding stopped after frame 50 at 1.667 s .*3 of 8 planned"):
        batch = read_frames(path, num_frames=8)
    assert batch.indices.tolist() == [0, 12, 25, 38, 50]
    assert [frame_id(f) for f in batch.frames] == [0, 12, 25, 38, 50]


def test_a_frame_missing_in_the_middle_is_named(videos):
    path = videos["corrupt_one_avi"]  # only packet 40 is garbage
    with pytest.warns(PartialDecodeWarning) as caught:
        batch = read_frames(path, start=1.2, end=1.5)
    assert batch.indices.tolist() == [frame_id(f) for f in batch.frames] == [36, 37, 38, 39, 41, 42, 43, 44]
    assert str(caught[0].message) == (
        f"{path}: 1 of 9 planned frames are missing (decoder error: Invalid data found when processing input): "
        "frames 40 (1.333 s)"
    )


def test_decoding_is_bounded_in_time(videos):
    plan = plan_frames(probe(videos["h264_mp4"]), num_frames=4)
    with pytest.raises(DecodeTimeoutError, match="exceeded its 0 s budget") as e:
        list(iter_frames(videos["h264_mp4"], plan, timeout=0.0))
    assert isinstance(e.value, TimeoutError) and e.value.path == str(videos["h264_mp4"])


def test_time_budget_excludes_consumer_time(videos, monkeypatch):
    from recot.video import budget

    clock = iter(np.arange(0, 1000, 0.001))  # every clock reading advances 1 ms ...
    monkeypatch.setattr(budget.time, "monotonic", lambda: float(next(clock)))
    plan = plan_frames(probe(videos["h264_mp4"]), num_frames=4)
    frames = 0
    for batch in iter_frames(videos["h264_mp4"], plan, batch_size=1, timeout=0.5):
        for _ in range(1000):  # ... and the consumer reads it 1000 times (1 s) per batch, outside the budget
            budget.time.monotonic()
        frames += len(batch)
    assert frames == 4


def test_no_warnings_for_good_files(videos):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_frames(videos["h264_mp4"], num_frames=3)) == 3
