"""``recot train`` (alignment / instruction tuning) and ``recot prune-data`` (video-specific dataset pruning).

One process::

    recot train --config configs/train_sft.yaml [--resume]

Several, with ``accelerate`` (DDP; FSDP and DeepSpeed ZeRO-2/3 by config file)::

    accelerate launch --config_file configs/accelerate/ddp.yaml -m recot.cli train --config FILE
    torchrun --nproc_per_node 2 -m recot.cli train --config FILE                     # CPUs, gloo

Pruning::

    recot prune-data train.json --out kept.json --report report.md [--budget 0.6] [--model DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recot.cli import at_least, positive, report_error


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``prune-data``."""
    p = subparsers.add_parser(
        "train",
        help="train the model: projector alignment or instruction tuning (LoRA, accelerate, resumable)",
        description="Train Video-XL-Pro on conversation data (LLaVA-Video format) from a YAML/TOML config.",
    )
    p.add_argument("--config", required=True, help="YAML or TOML training config (see configs/train_*.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of output_dir")
    p.add_argument("--output-dir", help="override output_dir of the config")
    p.add_argument("--steps", type=int, help="override optim.steps")
    p.add_argument("--stop-after", type=at_least(1), metavar="N",
                   help="stop once step N is done, with its checkpoint and model; the learning-rate schedule is still "
                        "that of optim.steps, and --resume goes on from there")  # fmt: skip
    p.add_argument("--strict", action="store_true", help="stop at the first bad data row instead of skipping it")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)

    q = subparsers.add_parser(
        "prune-data",
        help="drop training samples that teach little (duplicates, static video, text-answerable), balanced",
        description="Video-specific dataset pruning (design: docs/pruning.md). Writes the kept rows, a per-sample "
        "decision JSONL next to them and a Markdown report.",
    )
    q.add_argument("data", type=Path, help="JSON or JSONL conversation file")
    q.add_argument("--out", type=Path, required=True, help="kept rows (same format as the input)")
    q.add_argument("--report", type=Path, required=True, help="Markdown report of what was dropped and why")
    q.add_argument("--decisions", type=Path, help="per-sample decisions JSONL (default: OUT with .decisions.jsonl)")
    q.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="largest share of samples to keep, in (0, 1] (default 1); only flagged samples are "
        "dropped to reach it, so it can stay unmet",
    )
    q.add_argument("--media-root", type=Path, help="folder that media paths are relative to (default: the file's)")
    q.add_argument(
        "--model", type=Path, help="checkpoint for the encodings and the text-only pass (default: the default model)"
    )
    q.add_argument("--fps", type=positive, default=1.0, help="frames a second for the encodings")
    q.add_argument("--max-frames", type=at_least(1), default=64, help="most frames sampled from one video")
    q.add_argument("--cache-dir", type=Path, help="encode cache root (default: $RECOT_CACHE_DIR or the user cache)")
    q.add_argument("--scores", type=Path, help="score cache JSONL (default: OUT with .scores.jsonl); reruns resume")
    q.add_argument("--seed", type=int, default=0, help="seed of the tie-breaking among equally redundant samples")
    q.add_argument("--strict", action="store_true", help="stop at the first bad row")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=run_prune)


def run_train(args: argparse.Namespace) -> int:
    """Run ``recot train``; returns the exit code (2: bad config, 1: bad data or model)."""
    from recot.model.checkpoint import CheckpointError
    from recot.train.config import load_train_config
    from recot.train.data import DataError
    from recot.train.trainer import MODEL_DIR, train

    try:
        cfg = load_train_config(args.config)
    except ValueError as exc:
        return report_error("train", str(exc), 2)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.steps is not None:
        if args.steps < 1:
            return report_error("train", f"--steps must be >= 1, got {args.steps}", 2)
        cfg.optim.steps = args.steps
    if args.strict:
        cfg.data.strict = True
    from recot.train.trainer import distributed_state

    state = distributed_state()
    try:
        rows = train(cfg, resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after)
    except DataError as exc:
        return report_error("train", str(exc), 1)
    except CheckpointError as exc:
        return report_error("train", f"model: {exc}", 1)
    except (ValueError, FileNotFoundError) as exc:
        return report_error("train", f"{exc} (config {args.config})", 2)
    finally:
        state.destroy_process_group()
    if rows and state.is_main_process:
        print(f"step {int(rows[-1]['step'])}: loss {rows[-1]['loss']:.5f}; model in {Path(cfg.output_dir) / MODEL_DIR}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    """Run ``recot prune-data``; returns the exit code."""
    from recot.model.checkpoint import CheckpointError
    from recot.train.data import DataError
    from recot.train.prune import PruneOptions, prune_file

    if not 0 < args.budget <= 1:
        return report_error("prune-data", f"--budget must be in (0, 1], got {args.budget}", 2)
    if not args.data.is_file():
        return report_error("prune-data", f"data file {args.data} does not exist", 2)
    options = PruneOptions(
        budget=args.budget, fps=args.fps, max_frames=args.max_frames, seed=args.seed, strict=args.strict,
        progress=not args.no_progress,
    )  # fmt: skip
    try:
        summary = prune_file(
            args.data, args.out, args.report, options, media_root=args.media_root, model_dir=args.model,
            cache_dir=args.cache_dir, decisions=args.decisions, scores=args.scores,
        )  # fmt: skip
    except DataError as exc:
        return report_error("prune-data", str(exc), 1)
    except CheckpointError as exc:
        return report_error("prune-data", f"--model: {exc}", 1)
    print(summary)
    return 0
