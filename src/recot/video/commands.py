"""``recot video info`` and ``recot video frames``.

``info`` only probes, so this module imports no torch; ``frames`` loads the
decoder when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recot.cli import EXIT_USAGE, HelpFormatter, UsageError, at_least, between, check_time_range, positive, report_error

TIMESTAMPS_FILE = "timestamps.csv"
# recot.video.backends.BACKENDS, spelled out so that building the parser does not import PyAV (a test checks they agree)
BACKEND_CHOICES = ("auto", "pyav", "torchcodec")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``video`` command and its sub-commands to the ``recot`` parser."""
    video = subparsers.add_parser(
        "video", help="inspect videos and extract frames", description="Inspect videos and extract frames."
    )
    video.set_defaults(func=lambda args: _usage(video))
    commands = video.add_subparsers(dest="video_command", metavar="SUBCOMMAND")

    info = commands.add_parser(
        "info",
        help="show duration, fps, frame count, size, rotation and codec",
        description="Show a video's duration, frame rate, frame count, size, rotation and codec.",
    )
    info.add_argument("file", type=Path, help="video file, image or directory of frames")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)

    frames = commands.add_parser(
        "frames",
        help="sample frames and write them as JPEG files",
        description="Sample frames of a video and write them as JPEG files, with their times in timestamps.csv.",
        formatter_class=HelpFormatter,
    )
    frames.add_argument("file", type=Path, help="video file, image or directory of frames")
    frames.add_argument("--out", type=Path, required=True, help="output directory (must not exist or be empty)")
    rule = frames.add_mutually_exclusive_group(required=True)
    rule.add_argument("--frames", type=at_least(1), metavar="N", help="N frames spread uniformly")
    rule.add_argument("--fps", type=positive, metavar="F", help="F frames per second")
    frames.add_argument("--max-frames", type=at_least(1), metavar="M", help="at most M frames (uniform subset)")
    frames.add_argument("--start", type=at_least(0.0, float), metavar="SEC", help="first second to sample")
    frames.add_argument("--end", type=at_least(0.0, float), metavar="SEC", help="sample before this second")
    frames.add_argument("--size", type=at_least(1), metavar="S", help="resize frames to S x S (default: keep the size)")
    frames.add_argument("--quality", type=between(1, 100), default=95, help="JPEG quality, 1-100 (default: %(default)s)")
    frames.add_argument("--decode-workers", type=at_least(1), metavar="N",
                        help="decoding processes (default: every core for long videos, 1 for short ones)")  # fmt: skip
    frames.add_argument("--backend", choices=BACKEND_CHOICES, default="auto",
                        help="video decoder (default: auto, torchcodec where installed and faster, else PyAV)")  # fmt: skip
    frames.set_defaults(func=run_frames)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def run_info(args: argparse.Namespace) -> int:
    """Print what ``probe`` finds, as a table or JSON."""
    import json

    from recot.video.errors import VideoDecodeError
    from recot.video.probe import probe

    try:
        info = probe(args.file)
    except VideoDecodeError as e:
        return report_error("video info", str(e))
    fields = info.to_dict()
    if args.json:
        print(json.dumps(fields, indent=2))
        return 0
    fields["num_frames"] = f"{info.num_frames} ({'exact' if info.num_frames_exact else 'estimated'})"
    del fields["num_frames_exact"]
    fields["duration"] = f"{info.duration:.3f} s"
    fields["avg_fps"] = f"{info.avg_fps:.3f}"
    fields["start_time"] = f"{info.start_time:.3f} s"
    width = max(map(len, fields))
    for key, value in fields.items():
        print(f"{key:<{width}}  {value}")
    return 0


def run_frames(args: argparse.Namespace) -> int:
    """Sample frames, write ``frame_NNNNNN.jpg`` files and ``timestamps.csv`` into ``--out`` atomically."""
    try:
        check_time_range(args.start, args.end)
    except UsageError as e:
        return report_error("video frames", str(e), EXIT_USAGE)
    out: Path = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        return report_error("video frames", f"--out {out} exists and is not an empty directory")

    import csv
    import shutil
    import tempfile

    from PIL import Image

    from recot.video.errors import VideoDecodeError
    from recot.video.parallel import iter_frames_parallel
    from recot.video.probe import probe
    from recot.video.sample import plan_frames

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        return report_error("video frames", f"--out {out}: cannot write there: {e.strerror or e}")
    try:
        plan = plan_frames(
            probe(args.file), num_frames=args.frames, fps=args.fps,
            max_frames=args.max_frames, start=args.start, end=args.end,
        )  # fmt: skip
        rows = []
        batches = iter_frames_parallel(args.file, plan, batch_size=32, size=args.size, backend=args.backend,
                                       workers=args.decode_workers)  # fmt: skip
        for batch in batches:
            for rgb, index, timestamp in zip(batch.frames, batch.indices, batch.timestamps, strict=False):
                name = f"frame_{len(rows):06d}.jpg"
                Image.fromarray(rgb).save(tmp / name, quality=args.quality)
                rows.append((name, int(index), f"{timestamp:.6f}"))
        with open(tmp / TIMESTAMPS_FILE, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "frame_index", "timestamp"])
            writer.writerows(rows)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except (VideoDecodeError, ValueError, ImportError) as e:
        return report_error("video frames", str(e))
    except OSError as e:  # writing the frames (disk full, permissions)
        return report_error("video frames", f"--out {out}: {e}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"wrote {len(rows)} frames and {TIMESTAMPS_FILE} to {out}")
    return 0
