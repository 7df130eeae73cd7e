"""probe(): metadata and the frame index for every kind of input."""

from __future__ import annotations

import warnings
from fractions import Fraction

import av
import numpy as np
import pytest

from recot.video import PartialDecodeWarning, plan_frames, probe
from video_fixtures import DROPPED_SLOTS, FPS, START_OFFSET, VFR_PTS, N

CODECS = {
    "h264_mp4": "h264",
    "hevc_mkv": "hevc",
    "vp9_webm": "vp9",
    "mpeg4_avi": "mpeg4",
    "mjpeg_avi": "mjpeg",
    "mpeg2_ts": "mpeg2video",
}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_probe_codecs_and_containers(videos, name):
    info = probe(videos[name])
    assert (info.kind, info.codec, info.width, info.height, info.rotation) == ("video", CODECS[name], 64, 48, 0)
    assert info.num_frames == N and info.num_frames_exact
    assert info.duration == pytest.approx(N / FPS, abs=1e-3)
    assert info.avg_fps == pytest.approx(FPS, rel=1e-3)
    np.testing.assert_allclose(info.frame_times, np.arange(N) / FPS, atol=1e-3)
    assert info.keyframes[0] == 0


def test_probe_av1(videos):
    info = probe(videos["av1_mkv"])
    assert (info.codec, info.width, info.height, info.num_frames) == ("av1", 64, 64, 30)


def test_probe_variable_frame_rate_uses_true_times(videos):
    info = probe(videos["vfr_mkv"])
    np.testing.assert_allclose(info.frame_times, np.array(VFR_PTS) / 1000)
    assert info.num_frames == len(VFR_PTS)
    assert info.avg_fps == pytest.approx(len(VFR_PTS) / info.duration)


def test_probe_non_zero_start_time(videos):
    info = probe(videos["start_mkv"])
    assert info.start_time == pytest.approx(START_OFFSET)
    np.testing.assert_allclose(info.frame_times[:4], np.array([0, 33, 67, 100]) / 1000)


def test_probe_rotation_swaps_displayed_size(videos):
    info = probe(videos["rotated_mp4"])
    assert (info.rotation, info.width, info.height) == (90, 48, 64)


def test_probe_odd_size(videos):
    info = probe(videos["odd_mp4"])
    assert (info.width, info.height) == (63, 47)


def test_probe_keyframes(videos):
    with av.open(str(videos["short_gop_mp4"])) as c:  # reference: the decoder's key-frame flags
        decoded = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
    assert len(decoded) > 40
    assert probe(videos["short_gop_mp4"]).keyframes.tolist() == decoded
    assert probe(videos["long_gop_mp4"]).keyframes.tolist() == [0]


def test_probe_without_index_reads_header_only(videos):
    mp4 = probe(videos["h264_mp4"], index=False)
    assert (mp4.num_frames, mp4.num_frames_exact, mp4.frame_times) == (N, False, None)
    mkv = probe(videos["hevc_mkv"], index=False)  # mkv declares no count: estimated from duration * fps
    assert mkv.num_frames == N and not mkv.num_frames_exact
    with pytest.raises(ValueError, match="index=True"):
        plan_frames(mkv, num_frames=4)


def test_probe_images_and_frame_directories(videos):
    png = probe(videos["png"])
    assert (png.kind, png.is_image, png.num_frames, png.width, png.height) == ("image", True, 1, 64, 48)
    jpg = probe(videos["jpg_exif"])  # EXIF orientation 6: displayed rotated, so width and height swap
    assert (jpg.codec, jpg.width, jpg.height) == ("jpeg", 48, 64)
    frames = probe(videos["frames_dir"])
    assert frames.kind == "frames" and frames.num_frames == 12
    assert [p.rsplit("/", 1)[1] for p in frames.frame_files[:3]] == ["frame_0.png", "frame_1.png", "frame_2.png"]
    assert frames.frame_files[10].endswith("frame_10.png")


def test_probe_bigbuckbunny(bigbuckbunny):
    info = probe(bigbuckbunny)
    assert (info.codec, info.width, info.height, info.num_frames) == ("h264", 1280, 720, 132)
    assert info.avg_fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(5.28)
    assert info.to_dict()["num_keyframes"] == len(info.keyframes)


def test_stream_without_average_rate_uses_the_guessed_rate(tmp_path):
    # IVF (VP8) declares no average frame rate, so the header fallback (guessed_rate) is read;
    # it must be read while the container is still open.
    path = tmp_path / "v.ivf"
    with av.open(str(path), "w", format="ivf") as out:
        stream = out.add_stream("libvpx", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(10):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")))
        out.mux(stream.encode())
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate is None
    header = probe(path, index=False)
    assert (header.num_frames, header.num_frames_exact, header.avg_fps) == (10, False, 25.0)
    assert header.duration == pytest.approx(0.4)
    indexed = probe(path)
    assert (indexed.num_frames, indexed.codec, indexed.width, indexed.height) == (10, "vp8", 32, 32)
    np.testing.assert_allclose(indexed.frame_times, np.arange(10) / 25)


def test_dropped_frame_entries_are_not_truncation(videos):
    # Models opencv-doc's tree.avi: the AVI header counts every 1/30 s slot (45) while only 10 slots hold a
    # picture; the others are empty "dropped frame" entries. The file is complete: no warning.
    path = videos["dropped_avi"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.frames, stream.time_base) == (45, Fraction(1, FPS))  # what the header declares
        assert sum(1 for _ in container.decode(stream)) == len(DROPPED_SLOTS)  # what FFmpeg decodes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = probe(path)
    assert info.num_frames == len(DROPPED_SLOTS) and info.num_frames_exact
    np.testing.assert_allclose(info.frame_times, np.array(DROPPED_SLOTS) / FPS)
    assert info.duration == pytest.approx(45 / FPS)


def test_truncated_avi_is_still_reported(videos):
    # The same check that lets dropped frames pass must still catch an AVI cut short: its header declares
    # 90 frames (3 s) and its index, stored at the end, is gone.
    with pytest.warns(PartialDecodeWarning, match=r"declares 3.00 s but its video data ends at 1.77 s \(53 frames\)"):
        probe(videos["truncated_avi"])


def test_sequential_only_is_reported(videos):
    assert probe(videos["mpeg4_packed_avi"]).to_dict()["sequential_only"] is True
    assert probe(videos["mjpeg_avi"]).to_dict()["sequential_only"] is False  # AVI without B-frames seeks
