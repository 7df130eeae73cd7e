"""Training on one GPU: `recot train` alone, under accelerate's DDP (NCCL) and FSDP configs, and DeepSpeed
ZeRO-2 where installed, each for a few steps on generated data; then the saved checkpoint answers.

Each launch runs the same ``sft`` config (``--preset``, bf16 autocast on a GPU that has it, gradient
checkpointing) in a fresh process and is judged by what it leaves behind:

* ``metrics.csv``: the first and last loss, the mean step time after the first step;
* ``model/``: the released-layout checkpoint, asked one question with ``recot ask`` on the same device;
* peak GPU memory is not observable from outside the process: the step time and the loss are.

Data comes from ``recot make-qa-data`` (procedural videos with known answers), so nothing is downloaded.
Writes ``benchmarks/results/gpu_train_<device>.{json,md}`` atomically (or ``--out``).

    python benchmarks/gpu_train.py                         # CUDA: small preset, ~2 minutes on an H100
    python benchmarks/gpu_train.py --device cpu --preset tiny --quick --launches single ddp   # smoke test
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LAUNCHES = ("single", "ddp", "fsdp", "zero2")
NEEDS = {"torch": "torch", "transformers": "transformers", "accelerate": "accelerate", "av": "av",
         "pydantic": "pydantic", "platformdirs": "platformdirs", "yaml": "pyyaml", "safetensors": "safetensors"}  # fmt: skip


def missing_packages() -> list[str]:
    return [pip for module, pip in NEEDS.items() if importlib.util.find_spec(module) is None]


def recot(*argv: str) -> list[str]:
    return [sys.executable, "-m", "recot.cli", *argv]


def launch_command(launch: str, config: Path, device: str) -> list[str] | None:
    """The command line of one launch (None where this machine cannot run it)."""
    train = ["-m", "recot.cli", "train", "--config", str(config)]
    if launch == "single":
        return [sys.executable, *train]
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1"]
    if launch == "ddp":
        extra = ["--cpu"] if device == "cpu" else []
        return [*accelerate, "--config_file", str(ROOT / "configs/accelerate/ddp.yaml"), *extra, *train]
    if device != "cuda":
        return None  # FSDP and DeepSpeed here mean GPUs
    if launch == "zero2" and importlib.util.find_spec("deepspeed") is None:
        return None
    return [*accelerate, "--config_file", str(ROOT / f"configs/accelerate/{launch}.yaml"), *train]


def write_config(path: Path, out: Path, data: Path, args: argparse.Namespace) -> None:
    import yaml

    config = {
        "stage": "sft", "output_dir": str(out), "checkpoint_every": 1000, "seed": 0,
        "model": {"preset": args.preset, "seed": 0},
        "data": {"train": [str(data / "train.json")], "media_root": str(data), "fps": 1.0, "max_frames": args.frames},
        "optim": {"steps": args.steps, "batch_size": 2, "warmup_steps": 1,
                  "lr": {"language_model": 1.0e-3, "compressor": 1.0e-3, "selector": 1.0e-3, "projector": 1.0e-3}},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))


def read_metrics(out: Path) -> dict[str, Any]:
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["loss"]) for r in rows]
    later = [float(r["samples_per_s"]) for r in rows[1:]] or [float(rows[0]["samples_per_s"])]  # step 1 warms up
    return {"steps": len(rows), "first_loss": losses[0], "last_loss": losses[-1], "samples_per_s": sum(later) / len(later)}


def run_launch(launch: str, work: Path, data: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    out = work / f"run-{launch}"
    config = work / f"{launch}.yaml"
    write_config(config, out, data, args)
    command = launch_command(launch, config, args.device)
    if command is None:
        why = "deepspeed is not installed" if launch == "zero2" and args.device == "cuda" else f"needs CUDA, ran on {args.device}"
        return {"launch": launch, "skipped": why}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {"launch": launch, "seconds": seconds, "returncode": done.returncode}
    if done.returncode != 0:
        row["error"] = (done.stderr or done.stdout)[-1500:]
        return row
    row.update(read_metrics(out))
    video = data / json.loads((data / "train.json").read_text())[0]["video"]
    ask = subprocess.run(recot("ask", str(video), "What colour was the object that appeared briefly?", "--model",
                               str(out / "model"), "--device", args.device, "--frames", str(args.frames),
                               "--max-new-tokens", "8", "--no-cache", "--no-progress", "--json"),
                         env=env, capture_output=True, text=True, timeout=args.timeout, check=False)  # fmt: skip
    row["ask_returncode"] = ask.returncode
    row["ask"] = json.loads(ask.stdout.splitlines()[-1]) if ask.returncode == 0 else ask.stderr[-1000:]
    return row


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"# Training launches on {meta['device_name']}", "",
             f"Preset `{meta['preset']}`, {meta['steps']} steps of `sft` (global batch 2, {meta['frames']} frames a "
             f"sample), torch {meta['torch']}, {meta['when']}. Command: `{meta['command']}`.", "",
             "| launch | result | first loss | last loss | samples/s | wall (s) | saved model answers |", "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['launch']} | skipped: {r['skipped']} | | | | | |")
        elif "error" in r:
            last = r["error"].strip().splitlines()[-1] if r["error"].strip() else "no output"
            lines.append(f"| {r['launch']} | failed (exit {r['returncode']}): {last} | | | | {r['seconds']:.0f} | |")
        else:
            answered = "yes" if r["ask_returncode"] == 0 else "no"
            lines.append(f"| {r['launch']} | {r['steps']} steps | {r['first_loss']:.3f} | {r['last_loss']:.3f} | "
                         f"{r['samples_per_s']:.2f} | {r['seconds']:.0f} | {answered} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--frames", type=int, default=64, help="frames a sample (default: 64)")
    parser.add_argument("--quick", action="store_true", help="3 steps, 16 frames, 3-minute videos")
    parser.add_argument("--launches", nargs="+", choices=LAUNCHES, default=list(LAUNCHES))
    parser.add_argument("--timeout", type=float, default=300, help="seconds a launch may take (default: 300)")
    parser.add_argument("--out", type=Path, help="results path without suffix (default: benchmarks/results/gpu_train_<device>)")
    args = parser.parse_args()
    missing = missing_packages()
    if missing:
        print(f"benchmarks/gpu_train.py: missing Python packages: {', '.join(missing)}; see docs/gpu.md for carrying "
              "wheels to a machine without network access", file=sys.stderr)  # fmt: skip
        return 2
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.quick:
        args.steps, args.frames = 3, 16
    out = args.out or RESULTS / f"gpu_train_{args.device}{'_quick' if args.quick else ''}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    meta = {"device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU", "device": args.device,
            "preset": args.preset, "steps": args.steps, "frames": args.frames, "torch": torch.__version__,
            "when": time.strftime("%Y-%m-%d %H:%M"), "command": "python benchmarks/gpu_train.py " + " ".join(sys.argv[1:])}  # fmt: skip
    from recot.data.atomic import atomic_write_text

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "qa"
        subprocess.run(recot("make-qa-data", "--split", "train", "--count", "4", "--out", str(data), "--minutes", "3",
                             "--no-progress"), env=env, check=True, capture_output=True, timeout=args.timeout)  # fmt: skip
        for launch in args.launches:
            row = run_launch(launch, work, data, args, env)
            print(json.dumps(row)[:2000], file=sys.stderr, flush=True)
            rows.append(row)
            out.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
            atomic_write_text(out.with_suffix(".md"), markdown(meta, rows))
    print(markdown(meta, rows))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
