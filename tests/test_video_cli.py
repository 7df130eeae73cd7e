"""recot video info / frames."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from recot.cli import main
from recot.video import FrameCountCappedWarning, plan_frames, probe
from video_fixtures import VFR_PTS, N, frame_id


def test_info_json(videos, capsys):
    assert main(["video", "info", str(videos["vfr_mkv"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["num_frames"], info["num_frames_exact"], info["codec"]) == (15, True, "h264")
    assert info["duration"] == pytest.approx(1.533)


def test_info_table(videos, capsys):
    assert main(["video", "info", str(videos["rotated_mp4"])]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert lines["num_frames"] == "90 (exact)"
    assert (lines["width"], lines["height"], lines["rotation"]) == ("48", "64", "90")
    assert lines["duration"] == "3.000 s"


def test_info_error(videos, capsys):
    assert main(["video", "info", str(videos["audio_m4a"])]) == 1
    assert "has no video stream" in capsys.readouterr().err


def test_frames_writes_jpegs_and_timestamps(videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["video", "frames", str(videos["h264_mp4"]), "--out", str(out), "--frames", "5", "--size", "32"]) == 0
    with open(out / "timestamps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame_index"]) for r in rows] == [0, 22, 44, 66, 89]
    np.testing.assert_allclose([float(r["timestamp"]) for r in rows], np.array([0, 22, 44, 66, 89]) / 30, atol=1e-6)
    for row in rows:
        image = np.asarray(Image.open(out / row["file"]))
        assert image.shape == (32, 32, 3) and frame_id(image) == int(row["frame_index"])
    assert sorted(p.name for p in out.iterdir()) == sorted([r["file"] for r in rows] + ["timestamps.csv"])
    assert "wrote 5 frames" in capsys.readouterr().out


def test_frames_fps_with_range(videos, tmp_path):
    out = tmp_path / "out"
    assert main(["video", "frames", str(videos["start_mkv"]), "--out", str(out), "--fps", "2", "--start", "1"]) == 0
    with open(out / "timestamps.csv") as f:
        assert [int(r["frame_index"]) for r in csv.DictReader(f)] == [30, 45, 60, 75]


def test_frames_failure_leaves_nothing(videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["video", "frames", str(videos["random_mp4"]), "--out", str(out), "--frames", "3"]) == 1
    assert "FFmpeg cannot read it" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary directory


def test_frames_refuses_non_empty_output(videos, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main(["video", "frames", str(videos["h264_mp4"]), "--out", str(tmp_path / "out"), "--frames", "2"]) == 1
    assert "not an empty directory" in capsys.readouterr().err


def _rows(out):
    with open(out / "timestamps.csv") as f:
        return list(csv.DictReader(f))


def test_frames_from_packed_b_frames_avi_are_all_written(videos, tmp_path, capsys):
    # DivX packed B-frames: every planned frame is written, each the frame its index names.
    out = tmp_path / "out"
    assert main(["video", "frames", str(videos["mpeg4_packed_avi"]), "--out", str(out), "--fps", "1"]) == 0
    rows = _rows(out)
    # FFmpeg times AVI B-frame streams from one frame in (the reorder delay): frame k is shown at (k + 1) / 30 s,
    # so the frames on screen at 0, 1, 2 and 3 s are 0 (the first), 29, 59 and 89.
    assert [int(r["frame_index"]) for r in rows] == [0, 29, 59, 89]
    assert [frame_id(np.asarray(Image.open(out / r["file"]))) for r in rows] == [0, 29, 59, 89]
    np.testing.assert_allclose([float(r["timestamp"]) for r in rows], np.array([1, 30, 60, 90]) / 30, atol=1e-6)
    assert "wrote 4 frames" in capsys.readouterr().out


def test_frames_beyond_the_video_are_capped_with_a_warning(videos, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["video", "frames", str(videos["h264_mp4"]), "--out", str(out), "--frames", "500"]) == 0
    rows = _rows(out)
    assert [int(r["frame_index"]) for r in rows] == list(range(N))  # no duplicates
    captured = capsys.readouterr()
    assert "wrote 90 frames" in captured.out
    # The CLI prints the FrameCountCappedWarning as one line of its own.
    assert f"recot video frames: warning: {videos['h264_mp4']}: asked for 500 frames but the video holds 90" in captured.err
    with pytest.warns(FrameCountCappedWarning, match=r"h264.mp4: asked for 500 frames but the video holds 90"):
        plan_frames(probe(videos["h264_mp4"]), num_frames=500)


def test_fps_above_the_native_rate_writes_each_frame_once(videos, tmp_path):
    out = tmp_path / "out"
    assert main(["video", "frames", str(videos["vfr_mkv"]), "--out", str(out), "--fps", "1000"]) == 0
    assert [int(r["frame_index"]) for r in _rows(out)] == list(range(len(VFR_PTS)))


