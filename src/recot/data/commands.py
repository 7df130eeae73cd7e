"""``recot make-qa-data``: the synthetic long-video QA dataset (design and templates: docs/synthetic-qa.md).

::

    recot make-qa-data --split train --count 200 --out data/qa [--seed 0] [--minutes 5 120] [--fps 1] [--size 128]

Reruns skip videos already written; rows and manifest are rewritten (atomically) every time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recot.cli import EXIT_USAGE, at_least, positive, report_error


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``make-qa-data``."""
    p = subparsers.add_parser(
        "make-qa-data",
        help="generate synthetic long videos with timed events and exact question/answer rows",
        description="Generate procedural long videos (named scenes, objects inserted at known times) and LLaVA-Video "
        "rows of five question types with exact answers. Splits come from disjoint seed ranges; 'ood' uses "
        "shape x colour combinations and scenes the other splits never show.",
    )
    p.add_argument("--split", required=True, choices=["train", "validation", "test", "ood"], help="which seed range")
    p.add_argument("--count", type=at_least(1), required=True, help="number of videos")
    p.add_argument("--out", type=Path, required=True, help="output folder (videos/, SPLIT.json, SPLIT.videos.jsonl)")
    p.add_argument("--seed", type=at_least(0), default=0, help="first video index within the split's seed range")
    p.add_argument("--minutes", type=positive, nargs="+", default=[5.0, 120.0], metavar="M",
                   help="video length in minutes: one value, or MIN MAX (log-uniform)")  # fmt: skip
    p.add_argument("--fps", type=positive, default=1.0, help="frames a second")
    p.add_argument("--size", type=at_least(32), default=128, help="frame side in pixels (square)")
    p.add_argument("--describe", action="store_true",
                   help="also write each video's timed description (\"00:00 ocean; 00:12 red circle; ...\"): "
                   "dense training rows for a model trained from scratch")  # fmt: skip
    p.add_argument("--ground", action="store_true",
                   help="also write, per video, a conversation asking which object is on screen at each object's "
                   "time (\"Which object is on screen at 00:12?\" -> \"red circle\"): training rows")  # fmt: skip
    p.add_argument("--ground-turns", type=at_least(1), default=0, metavar="T",
                   help="also write, per video, conversations of T turns that each name a time and ask what is on "
                   "screen then (its scene, or the object shown): training rows")  # fmt: skip
    p.add_argument("--ground-conversations", type=at_least(1), default=1, metavar="K",
                   help="with --ground-turns: K such conversations per video, each with its own times (default 1)")
    p.add_argument("--object-turns", action="store_true",
                   help="also write, per video, one conversation asking every question of the four object types "
                   "it has an exact answer to (colour or shape, count and the needle's time per object; the pair's "
                   "order): training rows")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_make_qa_data)


def run_make_qa_data(args: argparse.Namespace) -> int:
    """Run ``recot make-qa-data``; returns the exit code."""
    from recot.data.synthetic_qa import write_dataset

    if len(args.minutes) > 2:
        return report_error("make-qa-data", f"--minutes takes one or two values, got {len(args.minutes)}", EXIT_USAGE)
    low, high = args.minutes[0], args.minutes[-1]
    if low > high:
        return report_error("make-qa-data", f"--minutes MIN MAX needs MIN <= MAX, got {low:g} {high:g}", EXIT_USAGE)
    if args.out.exists() and not args.out.is_dir():
        return report_error("make-qa-data", f"--out {args.out} is a file, not a folder")
    try:
        summary = write_dataset(
            args.out, args.split, args.count, first=args.seed, min_minutes=low, max_minutes=high, fps=args.fps,
            size=args.size, progress=not args.no_progress, describe=args.describe, ground=args.ground,
            ground_turns=args.ground_turns, ground_conversations=args.ground_conversations, object_turns=args.object_turns,
        )  # fmt: skip
    except ValueError as exc:
        return report_error("make-qa-data", str(exc), EXIT_USAGE)
    except OSError as exc:  # --out cannot be created or written
        return report_error("make-qa-data", f"cannot write --out {args.out}: {exc}")
    print(
        f"{summary.split}: {summary.videos_written} videos written ({summary.frames_written} frames), "
        f"{summary.videos_skipped} already there; {summary.rows} rows in {summary.rows_file}"
    )
    return 0
