"""Launches in real processes: 2 processes (torchrun, gloo) == 1 process; SIGKILL + --resume == uninterrupted."""

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recot.model.videoxl_pro import VideoXLPro
from recot.train.trainer import MODEL_DIR, latest_checkpoint, train
from test_train_fixtures import make_config, make_dataset, one_thread, same_outputs, write_yaml  # noqa: F401 (autouse fixture)

SRC = str(Path(__file__).resolve().parents[1] / "src")


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run: Path) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=True, with_image_row=True)
    cfg = make_config(data, tmp_path / "two", steps=3, batch=4)
    single = train(make_config(data, tmp_path / "one", steps=3, batch=4), progress=False)
    config = write_yaml(cfg, tmp_path / "c.yaml")
    # torchrun starts the processes (accelerate's own launcher needs MPI for several CPU processes).
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
        "-m", "recot.cli", "train", "--config", str(config), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(launch, env=env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("usable rows") == 1  # the data are checked once, on the main process
    saved = sorted(p.name for p in latest_checkpoint(tmp_path / "two").iterdir())
    assert "random_states_0.pkl" in saved and "random_states_1.pkl" in saved  # two processes did run
    assert losses(tmp_path / "two") == pytest.approx([r["loss"] for r in single], rel=1e-5)
    same_outputs(tmp_path / "one" / MODEL_DIR, tmp_path / "two" / MODEL_DIR, data.parent / "v0.mp4")


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=True)
    steps = 40
    full = train(make_config(data, tmp_path / "full", steps=steps, batch=2), progress=False)
    cfg = make_config(data, tmp_path / "killed", steps=steps, batch=2)
    config = write_yaml(cfg, tmp_path / "c.yaml")
    command = [sys.executable, "-m", "recot.cli", "train", "--config", str(config), "--no-progress"]
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while True:
            ckpt = latest_checkpoint(tmp_path / "killed")
            if ckpt is not None and int(ckpt.name.split("-")[1]) >= 6:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # wherever it is: mid-step, mid-checkpoint, mid-log line
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = int(latest_checkpoint(tmp_path / "killed").name.split("-")[1])
    assert 6 <= killed_at < steps and not (tmp_path / "killed" / MODEL_DIR).exists()
    rest = train(cfg, resume=True, progress=False)
    assert [r["step"] for r in rest] == list(range(killed_at + 1, steps + 1))
    assert losses(tmp_path / "killed") == [r["loss"] for r in full]
    a = VideoXLPro.from_pretrained(tmp_path / "full" / MODEL_DIR).state_dict()
    b = VideoXLPro.from_pretrained(tmp_path / "killed" / MODEL_DIR).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Only complete checkpoints remain (the latest one; no torn temporary folder after the resumed run).
    assert [p.name for p in (tmp_path / "killed" / "checkpoints").iterdir() if p.name != "latest"] == [
        f"step-{steps:08d}"
    ]
