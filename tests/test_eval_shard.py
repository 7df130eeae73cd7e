"""Sharding: ``torchrun --nproc_per_node 2`` on CPU (gloo) writes the same results.json, byte for byte, as 1 process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine_fixtures import write_video
from eval_fixtures import printable_tiny_model, write_json

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.slow
def test_two_processes_give_identical_results(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed")
    model, processor = printable_tiny_model()
    model.save_pretrained(tmp_path / "model", tokenizer=processor.tokenizer)
    rows = []
    for v in range(5):
        write_video(tmp_path / f"count_{v}.mp4", num_frames=20, seed=v)
        for q in range(2):
            rows.append({"video_name": f"count_{v}.mp4", "question": f"How many {v}-{q}?\n(A) 1\n(B) 2\n(C) 3",
                         "answer": "ABC"[(v + q) % 3], "task_type": "count", "question_id": f"C{v}{q}"})  # fmt: skip
    rows.append(
        {"video_name": "missing.mp4", "question": "?\n(A) a", "answer": "A", "task_type": "count", "question_id": "M"}
    )
    write_json(tmp_path / "mlvu.json", rows)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}  # same threads per process in both runs

    def args(name: str) -> list[str]:
        return ["-m", "recot.cli", "eval", "mlvu-dev", "--data", str(tmp_path / "mlvu.json"), "--model",
                str(tmp_path / "model"), "--frames", "8", "--max-new-tokens", "6", "--output", str(tmp_path / name),
                "--cache-dir", str(tmp_path / f"cache-{name}"), "--no-progress"]  # fmt: skip

    one = subprocess.run([sys.executable, *args("one")], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", *args("two")], env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two" / "results.json").read_bytes() == (tmp_path / "one" / "results.json").read_bytes()
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["counts"] == {"questions": 11, "answered": 10, "skipped_questions": 1, "rejected_rows": 0}
    ids = [json.loads(line)["id"] for line in (tmp_path / "two" / "predictions.jsonl").read_text().splitlines()]
    assert ids == [f"C{v}{q}" for v in range(5) for q in range(2)]  # merged in dataset order
    assert not list((tmp_path / "two").glob("*.rank*"))  # part files merged and removed

    def outputs(name: str) -> dict[str, str]:
        lines = (tmp_path / name / "predictions.jsonl").read_text().splitlines()
        return {json.loads(line)["id"]: json.loads(line)["output"] for line in lines}

    assert outputs("one") == outputs("two")
    assert len(set(outputs("one").values())) > 1 and all(outputs("one").values())  # visible, varied answers
