"""The torchcodec backend gives the same frames and timestamps as PyAV; "auto" picks it and falls back safely.

Tests marked ``needs_torchcodec`` skip when torchcodec does not import and load
(``pip install torchcodec==0.13.0`` with system FFmpeg 4-7 libraries).
"""

from __future__ import annotations

import csv
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from recot.cli import main
from recot.video import (
    DecodeTimeoutError,
    PartialDecodeWarning,
    SamplePlan,
    UnsupportedVideoError,
    backends,
    decode,
    iter_frames,
    plan_frames,
    probe,
    read_frames,
)
from recot.video.backends import choose_backend, resize_rgb, torchcodec_available
from video_fixtures import frame_id

needs_torchcodec = pytest.mark.skipif(not torchcodec_available(), reason="torchcodec does not load here")

VIDEOS = ["h264_mp4", "h264_mp4_faststart", "hevc_mkv", "vp9_webm", "mpeg4_avi", "mjpeg_avi", "odd_mp4", "av1_mkv",
          "vfr_mkv", "start_mkv", "rotated_mp4", "long_gop_mp4", "short_gop_mp4", "truncated_mkv"]


def both(path, **kwargs):
    """``read_frames`` with each backend forced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialDecodeWarning)  # truncated_mkv's header warning
        return read_frames(path, backend="pyav", **kwargs), read_frames(path, backend="torchcodec", **kwargs)


@needs_torchcodec
@pytest.mark.parametrize("name", VIDEOS)
def test_same_frames_and_timestamps_at_native_size(videos, name):
    pyav, tc = both(videos[name], num_frames=8)
    np.testing.assert_array_equal(tc.indices, pyav.indices)
    np.testing.assert_array_equal(tc.timestamps, pyav.timestamps)
    np.testing.assert_array_equal(tc.frames, pyav.frames)  # same decoder, same RGB conversion: identical pixels
    if name != "rotated_mp4":
        assert [frame_id(f) for f in tc.frames] == tc.indices.tolist()


@needs_torchcodec
@pytest.mark.parametrize("name", ["long_gop_mp4", "short_gop_mp4", "vfr_mkv", "start_mkv"])
def test_dense_sparse_and_ranged_plans_match(videos, name):
    info = probe(videos[name])
    plans = [plan_frames(info), plan_frames(info, fps=3), plan_frames(info, num_frames=min(40, info.num_frames)),
             plan_frames(info, fps=2, start=0.5, end=1.5)]
    for plan in plans:
        results = {}
        for backend in ("pyav", "torchcodec"):
            batches = list(iter_frames(videos[name], plan, batch_size=5, backend=backend))
            assert all(len(b) == 5 for b in batches[:-1])
            results[backend] = decode.FrameBatch.concat(batches)
        np.testing.assert_array_equal(results["torchcodec"].indices, plan.indices)
        np.testing.assert_array_equal(results["torchcodec"].timestamps, results["pyav"].timestamps)
        np.testing.assert_array_equal(results["torchcodec"].frames, results["pyav"].frames)


@needs_torchcodec
def test_timestamps_are_relative_to_the_container_start(videos):
    batch = read_frames(videos["start_mkv"], fps=1, backend="torchcodec")  # pts start at 10 s
    assert batch.indices.tolist() == [0, 30, 60]
    assert [frame_id(f) for f in batch.frames] == [0, 30, 60]
    np.testing.assert_allclose(batch.timestamps, [0.0, 1.0, 2.0], atol=1e-3)


@needs_torchcodec
def test_repeated_indices(videos):
    info = probe(videos["vfr_mkv"])  # a hand-made plan may repeat frames (plan_frames never does)
    indices = np.array([0, 0, 1, 5, 5, 5, 14])
    plan = SamplePlan(info=info, indices=indices, timestamps=info.frame_times[indices], rule="by hand")
    pyav, tc = (decode.FrameBatch.concat(list(iter_frames(info.path, plan, backend=b))) for b in ("pyav", "torchcodec"))
    assert tc.indices.tolist() == pyav.indices.tolist() == indices.tolist()
    np.testing.assert_array_equal(tc.frames, pyav.frames)


@needs_torchcodec
@pytest.mark.parametrize(("name", "size"), [("h264_mp4", 32), ("h264_mp4", (40, 20)), ("odd_mp4", (128, 96)),
                                            ("rotated_mp4", (30, 40))])
def test_resize_matches_within_tolerance(videos, name, size):
    pyav, tc = both(videos[name], num_frames=6, size=size)
    assert tc.frames.shape == pyav.frames.shape
    width, height = (size, size) if isinstance(size, int) else size
    assert tc.frames.shape[1:] == (height, width, 3)
    turn = -1 if name == "rotated_mp4" else 0
    assert [frame_id(np.rot90(f, turn)) for f in tc.frames] == [frame_id(np.rot90(f, turn)) for f in pyav.frames]
    # PyAV resizes YUV in the same swscale call as the RGB conversion, torchcodec's path resizes RGB afterwards.
    diff = np.abs(tc.frames.astype(int) - pyav.frames.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 16
    # Exactly: torchcodec's resized frames are swscale-bicubic resizes of the native frames.
    native = read_frames(videos[name], num_frames=6, backend="pyav")
    np.testing.assert_array_equal(tc.frames, np.stack([resize_rgb(f, (width, height)) for f in native.frames]))


@needs_torchcodec
def test_real_video(bigbuckbunny):
    pyav, tc = both(bigbuckbunny, num_frames=12)
    np.testing.assert_array_equal(tc.timestamps, pyav.timestamps)
    np.testing.assert_array_equal(tc.frames, pyav.frames)
    pyav, tc = both(bigbuckbunny, num_frames=12, size=384)
    diff = np.abs(tc.frames.astype(int) - pyav.frames.astype(int))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 16
    a, b = tc.frames.astype(np.float64).ravel(), pyav.frames.astype(np.float64).ravel()
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.999


@needs_torchcodec
def test_auto_picks_torchcodec_where_it_is_faster(videos):
    no_b_frames, b_frames = probe(videos["mpeg4_avi"]), probe(videos["h264_mp4"])
    assert not no_b_frames.has_b_frames and b_frames.has_b_frames
    assert choose_backend(no_b_frames, "auto") == "torchcodec"
    assert choose_backend(no_b_frames, "auto", (64, 48)) == "torchcodec"  # the native size
    assert choose_backend(no_b_frames, "auto", (32, 32)) == "pyav"  # resizing: PyAV's one-step swscale is faster
    assert choose_backend(b_frames, "auto") == "pyav"  # PyAV skips unwanted non-reference frames
    assert choose_backend(b_frames, "torchcodec", (32, 32)) == "torchcodec"
    assert choose_backend(no_b_frames, "pyav") == "pyav"
    assert choose_backend(probe(videos["frames_dir"]), "auto") == "pil"
    assert choose_backend(probe(videos["png"]), "auto") == "pil"
    with pytest.raises(ValueError, match="reads video files, not a frames input"):
        read_frames(videos["frames_dir"], backend="torchcodec")
    with pytest.raises(ValueError, match="backend must be one of"):
        read_frames(videos["h264_mp4"], backend="decord")


class _Flaky:
    """A torchcodec decoder whose ``get_frames_at`` fails (or returns wrong pts) on one call."""

    calls = 0

    def __init__(self, real, fail_on: int, mode: str, *args, **kwargs) -> None:
        self.decoder, self.fail_on, self.mode = real(*args, **kwargs), fail_on, mode

    def get_frames_at(self, indices):
        _Flaky.calls += 1
        batch = self.decoder.get_frames_at(indices)
        if _Flaky.calls != self.fail_on:
            return batch
        if self.mode == "error":
            raise RuntimeError("decodeAVFrame, /build/SingleStreamDecoder.cpp:1, Could not push packet to decoder")
        return SimpleNamespace(data=batch.data, pts_seconds=batch.pts_seconds + 1.0)  # the wrong frames


@needs_torchcodec
@pytest.mark.parametrize("mode", ["error", "wrong_pts"])
def test_auto_falls_back_to_pyav_part_way(videos, monkeypatch, mode):
    real = backends._load_torchcodec()[0]
    monkeypatch.setattr(backends, "_load_torchcodec", lambda: (lambda *a, **k: _Flaky(real, 3, mode, *a, **k), ""))
    monkeypatch.setattr(backends, "CHUNK_FRAMES", 2)
    handed_over = []
    pyav_decode = decode._decode_video

    def spy(*args, decoded=None, **kwargs):
        handed_over.append(list(decoded or []))
        return pyav_decode(*args, decoded=decoded, **kwargs)

    monkeypatch.setattr(decode, "_decode_video", spy)
    _Flaky.calls = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = read_frames(videos["mpeg4_avi"], num_frames=8)  # auto: no B-frames, native size -> torchcodec
    assert handed_over == [[0, 12, 25, 38]]  # chunks 1 and 2 from torchcodec, the rest from PyAV
    assert batch.indices.tolist() == [0, 12, 25, 38, 50, 63, 76, 89]
    assert [frame_id(f) for f in batch.frames] == batch.indices.tolist()
    pyav = read_frames(videos["mpeg4_avi"], num_frames=8, backend="pyav")
    np.testing.assert_array_equal(batch.frames, pyav.frames)
    np.testing.assert_array_equal(batch.timestamps, pyav.timestamps)

    _Flaky.calls = 0
    message = "torchcodec failed on the frames at 1.667-2.100 s" if mode == "error" else "torchcodec returned pts"
    with pytest.raises(UnsupportedVideoError, match=message):
        read_frames(videos["mpeg4_avi"], num_frames=8, backend="torchcodec")


@needs_torchcodec
def test_mpeg2_ts_reads_the_same_under_auto(videos):
    # torchcodec 0.13 with FFmpeg 5.1 seeks wrongly in this file (returns frame 10 for frame 0); auto avoids or
    # detects that (this stream has B-frames, so auto picks PyAV anyway).
    auto = read_frames(videos["mpeg2_ts"], num_frames=8)
    pyav = read_frames(videos["mpeg2_ts"], num_frames=8, backend="pyav")
    assert [frame_id(f) for f in auto.frames] == auto.indices.tolist() == [0, 12, 25, 38, 50, 63, 76, 89]
    np.testing.assert_array_equal(auto.frames, pyav.frames)
    np.testing.assert_array_equal(auto.timestamps, pyav.timestamps)


@needs_torchcodec
def test_damaged_tail_under_auto_warns_like_pyav(videos):
    assert choose_backend(probe(videos["corrupt_tail_avi"]), "auto") == "torchcodec"  # which fails; PyAV finishes
    with pytest.warns(PartialDecodeWarning, match="decoding stopped after frame 50"):
        auto = read_frames(videos["corrupt_tail_avi"], num_frames=8)
    with pytest.warns(PartialDecodeWarning):
        pyav = read_frames(videos["corrupt_tail_avi"], num_frames=8, backend="pyav")
    assert auto.indices.tolist() == pyav.indices.tolist() == [0, 12, 25, 38, 50]
    np.testing.assert_array_equal(auto.frames, pyav.frames)


@needs_torchcodec
def test_time_budget(videos):
    plan = plan_frames(probe(videos["h264_mp4"]), num_frames=4)
    with pytest.raises(DecodeTimeoutError, match="exceeded its 0 s budget"):
        list(iter_frames(videos["h264_mp4"], plan, timeout=0.0, backend="torchcodec"))


@needs_torchcodec
def test_cli_backend_option(videos, tmp_path):
    rows = {}
    for backend in ("pyav", "torchcodec"):
        out = tmp_path / backend
        args = ["video", "frames", str(videos["vfr_mkv"]), "--out", str(out), "--fps", "5", "--backend", backend]
        assert main(args) == 0
        with open(out / "timestamps.csv") as f:
            rows[backend] = list(csv.DictReader(f))
    assert rows["torchcodec"] == rows["pyav"]
    # the frame on screen at 0, 0.2, ..., 1.4 s (VFR_PTS), duplicates removed
    assert [r["frame_index"] for r in rows["pyav"]] == ["0", "5", "9", "12", "13"]
    assert [r["timestamp"] for r in rows["pyav"]] == ["0.000000", "0.120000", "0.400000", "1.000000", "1.010000"]
    for backend in rows:
        assert min(p.name for p in (tmp_path / backend).iterdir()) == "frame_000000.jpg"


def test_without_torchcodec_auto_uses_pyav(videos, monkeypatch):
    monkeypatch.setattr(backends, "_load_torchcodec", lambda: (None, "ImportError: No module named 'torchcodec'"))
    info = probe(videos["h264_mp4"])
    assert choose_backend(info, "auto") == "pyav"
    batch = read_frames(videos["h264_mp4"], num_frames=3)
    assert [frame_id(f) for f in batch.frames] == batch.indices.tolist() == [0, 44, 89]
    with pytest.raises(ImportError, match="backend='torchcodec' but torchcodec does not load"):
        read_frames(videos["h264_mp4"], num_frames=3, backend="torchcodec")
