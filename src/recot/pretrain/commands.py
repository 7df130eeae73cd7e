"""``recot pretrain-compressor``: self-supervised ReCoT pre-training from a YAML/TOML config.

Launch on one CPU/GPU as ``recot pretrain-compressor --config FILE``, or on N
processes unchanged with ``torchrun --nproc_per_node N -m recot.cli
pretrain-compressor --config FILE`` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse

from recot.cli import report_error


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain-compressor`` sub-command."""
    p = subparsers.add_parser(
        "pretrain-compressor",
        help="pre-train the ReCoT compressor (masked reconstruction with DTS and SGM)",
        description="Pre-train the ReCoT compressor on cached frozen vision features of videos and images.",
    )
    p.add_argument("--config", required=True, help="YAML or TOML pre-training config")
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint.pt")
    p.add_argument("--output-dir", help="override output_dir of the config")
    p.add_argument("--steps", type=int, help="override optim.steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    import torch.distributed as dist

    from recot.pretrain.train import init_distributed_from_env, load_config, train

    try:
        cfg = load_config(args.config)
    except ValueError as exc:
        return report_error("pretrain-compressor", str(exc), 2)
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.steps is not None:
        cfg.optim.steps = args.steps
    joined = init_distributed_from_env()
    try:
        rows = train(cfg, resume=args.resume, progress=not args.no_progress)
        if rows and (not joined or dist.get_rank() == 0):
            print(f"step {int(rows[-1]['step'])}: loss {rows[-1]['loss']:.5f}; outputs in {cfg.output_dir}")
    except FileNotFoundError as exc:  # a data path of the config
        return report_error("pretrain-compressor", f"{exc} (config {args.config})", 2)
    finally:
        if joined:
            dist.destroy_process_group()
    return 0
