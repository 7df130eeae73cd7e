"""benchmarks/overlap.py on a short generated video: every round decodes and encodes (no cache hit), and the
frames decoded by 1 and by 2 worker processes are the same (equal checksums)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recot.data.sample_video import write_sample_video

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "overlap.py"


@pytest.mark.slow
def test_two_rounds_measure_real_work_and_identical_frames(tmp_path):
    video = write_sample_video(tmp_path / "clip.mp4", duration=48, progress=False)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "RECOT_CACHE_DIR": str(tmp_path / "c")}
    cmd = [sys.executable, str(SCRIPT), "--video", str(video), "--frames", "16", "--workers", "2",
           "--scaling-frames", "24", "--scaling-workers", "1", "2", "--scaling-sizes", "model", "--repeat", "2",
           "--name", "smoke", "--out", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "smoke.json").read_text())
    runs = result["runs"]
    assert sorted((r["kind"], r["workers"], r["round"]) for r in runs) == sorted(
        (kind, workers, round_) for round_ in (0, 1)
        for kind, workers in [("decode", 2), ("encode", 2), ("ask", 2), ("scaling", 1), ("scaling", 2)]
    )  # fmt: skip
    asks = [r for r in runs if r["kind"] == "ask"]
    assert [r["cache_hit"] for r in asks] == [False, False]  # the second round must not reuse the first's encoding
    assert all(r["encode_s"] > 0 for r in asks)
    scaling = {r["checksum"] for r in runs if r["kind"] == "scaling"}
    assert len(scaling) == 1  # 1 and 2 workers, both rounds: the same frames
    assert {r["groups"] for r in runs if r["kind"] == "encode"} == {4}  # 16 frames, 4 per group
    table = (tmp_path / "out" / "smoke.md").read_text()
    assert "| 2 |" in table and "ask <= 1.15 x max(decode, encode) with 2 decode worker(s)" in table
    assert "decoding with 2 workers >= 1.6x faster than with 1 at 112x112 (model input)" in table
