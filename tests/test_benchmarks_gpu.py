"""benchmarks/gpu.py: the CPU smoke run (tiny preset, --quick) writes a complete table; missing packages are named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from file_modules import load_file_module
from recot.config import VideoXLProConfig
from recot.model.selector import num_kept

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu.py"


def _load_script():
    return load_file_module(SCRIPT, "gpu_benchmark")


def test_quick_cpu_run_writes_every_row(tmp_path):
    out = tmp_path / "gpu_smoke"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--preset", "tiny", "--quick", "--skip", "compile",
           "--out", str(out), "--work-dir", str(tmp_path / "work")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["meta"]["device_type"] == "cpu" and result["meta"]["preset"] == "tiny"
    rows = {}
    for row in result["rows"]:
        rows.setdefault(row["section"], []).append(row)
    assert set(rows) == {"pixels", "stages", "engine", "ask", "prefill", "hour"}
    assert [r["chunk"] for r in rows["pixels"]] == ["4/1", "8/2"] and all(r["frames_per_s"] > 0 for r in rows["pixels"])
    assert [r["frames"] for r in rows["engine"]] == [16, 64]
    assert all(r["frames_per_s"] > 0 and r["peak_gib"] > 0 for r in rows["engine"])
    config = VideoXLProConfig.from_preset("tiny")
    [ask] = rows["ask"]
    assert ask["visual_tokens"] == 64 * config.tokens_per_group // 4
    for row in rows["prefill"]:  # the released operating point: keep_ratio of every visual token
        assert row["kept"] == num_kept(config, row["visual_tokens"], config.keep_ratio, None)
    [hour] = rows["hour"]
    assert hour["frames"] == 60 and hour["decode_s"] > 0 and hour["seconds"] > 0
    table = out.with_suffix(".md").read_text()
    assert table.startswith("# Throughput on ") and "| what | measured here | issue 10 (H100, a9d1826) |" in table
    assert "end to end, sample video at 1 fps (60 frames)" in table and "`max_visual_tokens='all'`" in table


def test_missing_packages_are_named_with_how_to_carry_wheels(monkeypatch, capsys):
    gpu = _load_script()
    monkeypatch.setattr(gpu, "NEEDS", {**gpu.NEEDS, "no_such_module_xyz": "no-such-wheel"})
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--device", "cpu"])
    assert gpu.main() == 2
    err = capsys.readouterr().err
    assert "missing Python packages: no-such-wheel" in err
    assert "pip download no-such-wheel" in err and "pip install --no-index --find-links wheels/" in err



def test_the_released_preset_gets_a_processor(monkeypatch):
    """The full run builds the 3B preset with the byte tokenizer: its placeholder id must be the tokenizer's."""
    import torch

    module = _load_script()
    built = []
    monkeypatch.setattr("recot.VideoXLPro", lambda config: built.append(config) or torch.nn.Linear(1, 1))
    model, processor = module.build("videoxl-pro-3b", module.Device("cpu"), "float32")
    [config] = built
    assert config.hidden_size == 2048 and config.vocab_size == 151936  # the released sizes
    assert processor.tokenizer.convert_ids_to_tokens(config.placeholder_token_id) == "<|vision_pad|>"


def test_training_launch_script_on_cpu(tmp_path):
    """benchmarks/gpu_train.py (run on a GPU for the DDP/FSDP/DeepSpeed paths): its CPU smoke run trains and answers."""
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_train.py"
    out = tmp_path / "train_smoke"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    cmd = [sys.executable, str(script), "--device", "cpu", "--preset", "tiny", "--quick", "--launches", "single", "fsdp",
           "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    single, fsdp = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert single["launch"] == "single" and single["steps"] == 3 and single["ask_returncode"] == 0
    assert single["last_loss"] < single["first_loss"]  # 3 steps on 2 samples: the loss falls
    assert fsdp == {"launch": "fsdp", "skipped": "needs CUDA, ran on cpu"}
    assert "| single | 3 steps |" in out.with_suffix(".md").read_text()
