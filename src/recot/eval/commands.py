"""``recot eval TASK``: run a long-video benchmark (MLVU, Video-MME, LongVideoBench, VNBench, V-NIAH).

``recot eval mlvu-dev --data ~/data/MLVU --model Video-XL-Pro-3B --fps 1 --max-frames 256``
reads the benchmark's published files from ``--data``, encodes each video once
(cached), asks every question and scores the answers with the benchmark's
rule. Outputs go to ``--output`` (default ``recot-eval/TASK-<settings hash>``):
``predictions.jsonl``, ``results.json``, ``summary.md``. Rerunning the same
command resumes. ``recot eval vniah`` needs no data: it builds needle-in-a-haystack
videos from the generated sample video. Run it under ``torchrun --nproc_per_node N``
to shard the videos over N processes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from recot.cli import report_error, visual_token_limit

DESCRIPTION = """Run a long-video benchmark (MLVU, Video-MME, LongVideoBench, VNBench, V-NIAH).

recot eval mlvu-dev --data ~/data/MLVU --model Video-XL-Pro-3B --fps 1 --max-frames 256
reads the benchmark's published files from --data, encodes each video once (cached), asks
every question and scores the answers with the benchmark's rule. Outputs go to --output:
predictions.jsonl, results.json, summary.md. Rerunning the same command resumes.
recot eval vniah needs no data. Under torchrun --nproc_per_node N the videos are sharded."""

_TASK_HELP = "mlvu-dev, mlvu-test, videomme[-short|-medium|-long][-w-subtitle], longvideobench-val, vnbench, vniah"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` to the ``recot`` command."""
    from recot.eval.tasks import TASK_NAMES

    parser = subparsers.add_parser("eval", help="run a long-video benchmark", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("task", choices=TASK_NAMES, metavar="TASK", help=_TASK_HELP)
    parser.add_argument("--data", type=Path, help="the benchmark folder (or annotation file) you downloaded")
    parser.add_argument("--videos", type=Path, help="folder of the videos (default: the --data folder)")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: the default model, trained on synthetic QA only)")
    parser.add_argument("--dtype", help="float32 (default), bfloat16 or float16")
    parser.add_argument("--device", help="cpu (default), cuda, ...; under torchrun 'cuda' means cuda:LOCAL_RANK")
    frames = parser.add_mutually_exclusive_group()
    frames.add_argument("--frames", type=int, help="sample N frames uniformly")
    frames.add_argument("--fps", type=float, help="sample F frames a second (default: 1, at most 4096 frames)")
    parser.add_argument("--max-frames", type=int, help="cap on the number of frames")
    parser.add_argument("--keep-ratio", type=float, help="share of visual tokens the selector keeps (default: model's)")
    parser.add_argument("--max-visual-tokens", type=visual_token_limit, metavar="K|all",
                        help="most visual tokens the LLM may see (default: the model's own budget, else what fits its "
                        "context; 'all': keep_ratio "
                        "of every visual token, past the context, as the released model does)")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, help="answer length (default: the benchmark's)")
    parser.add_argument("--limit", type=int, help="only the first N questions (VNBench: samples of 4 tries)")
    parser.add_argument(
        "--extractor",
        choices=("legacy", "current"),
        default="legacy",
        help="answer extraction: each benchmark's 2025 rule (default) or lmms-eval's 2026 one",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of LongVideoBench's random fallback")
    parser.add_argument("--output", type=Path, help="run folder (default: recot-eval/TASK-<settings hash>)")
    parser.add_argument("--cache-dir", type=Path, help="cache root (default: $RECOT_CACHE_DIR or the user cache dir)")
    parser.add_argument("--cache-size", help="encode cache size limit, e.g. 20GB")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    niah = parser.add_argument_group("V-NIAH (task vniah)")
    niah.add_argument("--haystack", type=Path, help="haystack video (default: a generated 1-hour sample video)")
    niah.add_argument("--grid-frames", help="haystack lengths in frames, comma-separated (default: 64,128,256)")
    niah.add_argument("--depths", help="needle depths in percent, comma-separated (default: 0,50,100)")
    niah.add_argument("--needle-seconds", type=int, help="seconds (= frames) the needle is shown (default: 1)")
    niah.add_argument("--no-heatmap", action="store_true", help="do not draw heatmap.png (needs matplotlib)")
    parser.set_defaults(func=run_eval)


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


def run_eval(args: argparse.Namespace) -> int:
    """``recot eval``: exit 0 when the results are written, 1 on bad input, 2 on bad usage."""
    try:
        _check_usage(args)
    except UsageError as exc:
        return report_error("eval", str(exc), 2)
    from recot.eval.api import DataError
    from recot.eval.runner import RunDirError

    try:
        return _evaluate(args)
    except UsageError as exc:
        return report_error("eval", str(exc), 2)
    except RunDirError as exc:
        return report_error("eval", str(exc), 2)
    except DataError as exc:
        return report_error("eval", str(exc), 1)
    except KeyboardInterrupt:
        return report_error("eval", "interrupted; run the same command again to resume", 130)


def _check_usage(args: argparse.Namespace) -> None:
    positive = {"--frames": args.frames, "--max-frames": args.max_frames, "--max-new-tokens": args.max_new_tokens,
                "--limit": args.limit, "--needle-seconds": args.needle_seconds}  # fmt: skip
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.fps is not None and not args.fps > 0:
        raise UsageError(f"--fps must be > 0, got {args.fps}")
    if args.keep_ratio is not None and not 0 < args.keep_ratio <= 1:
        raise UsageError(f"--keep-ratio must be in (0, 1], got {args.keep_ratio}")
    niah_flags = {"--haystack": args.haystack, "--grid-frames": args.grid_frames, "--depths": args.depths,
                  "--needle-seconds": args.needle_seconds}  # fmt: skip
    if args.task == "vniah":
        sampling = [
            f
            for f, v in (("--frames", args.frames), ("--fps", args.fps), ("--max-frames", args.max_frames))
            if v is not None
        ]
        if sampling:
            raise UsageError(f"{', '.join(sampling)} do not apply to vniah: it shows the model every frame of each "
                             "cell; set the haystack lengths with --grid-frames")  # fmt: skip
        if args.videos is not None:
            raise UsageError("--videos does not apply to vniah (its videos are built from --haystack)")
        if args.haystack is not None and not args.haystack.exists():
            raise UsageError(f"--haystack {args.haystack} does not exist")
    else:
        given = [flag for flag, value in niah_flags.items() if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to the vniah task")
        if args.data is None:
            raise UsageError(f"{args.task} needs --data: the benchmark folder or annotation file you downloaded")
    if args.data is not None and not args.data.exists():
        raise UsageError(f"--data {args.data} does not exist")
    if args.videos is not None and not args.videos.is_dir():
        raise UsageError(f"--videos {args.videos} is not a folder")


def _number_list(flag: str, text: str | None, kind: type) -> tuple[Any, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise UsageError(f"{flag} must be comma-separated numbers, got {text!r}") from exc
    if not values:
        raise UsageError(f"{flag} is empty")
    return values


def _evaluate(args: argparse.Namespace) -> int:
    import os
    import warnings

    import torch

    from recot import __version__
    from recot.engine import (
        EncodingCache,
        FrameSampling,
        GenerationOptions,
        VideoChat,
        default_model_dir,
    )
    from recot.engine.cache import CacheCorruptWarning, resolve_cache_dir
    from recot.eval.runner import Evaluation, Shard, config_digest, sampling_record
    from recot.eval.tasks import make_task
    from recot.model.checkpoint import CheckpointError, parse_dtype

    try:
        parse_dtype(args.dtype)
        cache = EncodingCache(args.cache_dir, args.cache_size)
        if args.device is not None:
            torch.device(args.device)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(str(exc)) from exc
    options: dict[str, Any] = {}
    if args.task == "vniah":
        options = _vniah_options(args)
        if not args.no_heatmap:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                return report_error("eval", "the V-NIAH heatmap needs matplotlib: pip install 'recot[eval]', "
                                    "or pass --no-heatmap", 1)  # fmt: skip

    shard = Shard.from_env()
    device = args.device
    if device == "cuda" and shard.world_size > 1:
        device = f"cuda:{os.environ.get('LOCAL_RANK', shard.rank)}"
    model_dir = args.model if args.model is not None else default_model_dir(args.cache_dir)
    try:
        chat = VideoChat.from_pretrained(model_dir, dtype=args.dtype, device=device, cache=cache)
    except CheckpointError as exc:
        return report_error("eval", f"cannot load the model (--model): {exc}")
    model_config = chat.model.config

    if args.task == "vniah":
        options["frame_size"] = model_config.image_size
        if options.get("haystack") is None:
            options["haystack"] = _default_haystack(resolve_cache_dir(args.cache_dir), progress=not args.no_progress)
        options["synthetic_needles"] = None if args.data else _synthetic_needles(resolve_cache_dir(args.cache_dir))
    task = make_task(args.task, **options)
    data = task.load(args.data.resolve() if args.data else None, args.videos.resolve() if args.videos else None)
    if args.limit is not None:
        data.items = task.limit(data.items, args.limit)

    if args.task == "vniah":
        longest = max(task.frames) + task.needle_seconds
        sampling = FrameSampling(fps=1.0, max_frames=longest)  # every frame of each 1-fps cell
    else:
        sampling = FrameSampling(args.frames, args.fps, args.max_frames).resolved()
    max_new_tokens = args.max_new_tokens or task.max_new_tokens
    generation = GenerationOptions(keep_ratio=args.keep_ratio, max_visual_tokens=args.max_visual_tokens,
                                   max_new_tokens=max_new_tokens, seed=args.seed)  # fmt: skip
    digest = cache.file_digest  # memoised: a dataset file or haystack is hashed once
    config = {
        "task": task.name,
        "task_settings": task.settings(),
        "data": {
            "path": str(args.data.resolve()) if args.data else None,
            "files": {name: digest(path) for name, path in sorted(data.files.items())},
        },
        "model": {
            "path": str(Path(model_dir).resolve()),
            "id": chat.model_id,
            "dtype": str(chat.model.dtype).removeprefix("torch."),
            "preset": model_config.extra.get("preset"),
            "untrained": bool(model_config.extra.get("untrained", False)),
        },
        "recot_version": __version__,
        "sampling": sampling_record(sampling),
        "keep_ratio": args.keep_ratio if args.keep_ratio is not None else model_config.keep_ratio,
        "max_visual_tokens": args.max_visual_tokens,
        "max_new_tokens": max_new_tokens,
        # The chat turns around each question (the user text is in predictions.jsonl).
        "system_prompt": task.system_prompt if task.system_prompt is not None else model_config.system_prompt,
        "answer_prefix": task.answer_prefix,
        "decoding": "greedy",
        "extractor": args.extractor,
        "seed": args.seed,
        "limit": args.limit,
    }
    run_dir = args.output or Path("recot-eval") / f"{task.name}-{config_digest(config)}"
    evaluation = Evaluation(task=task, data=data, chat=chat, sampling=sampling, options=generation, config=config,
                            run_dir=run_dir, extractor=args.extractor, seed=args.seed,
                            progress=not args.no_progress, shard=shard)  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", CacheCorruptWarning)
            outcome = evaluation.run()
    finally:
        shard.close()
    if outcome.results is not None:
        results = outcome.results
        counts = results["counts"]
        unit = "%" if results["scale"] == "percent" else " (fraction)"
        print(f"{results['title']}: {results['scores']['overall']:.4g}{unit}; {counts['answered']} of "
              f"{counts['questions']} questions answered, {counts['skipped_questions']} skipped, "
              f"{counts['rejected_rows']} annotation rows rejected")  # fmt: skip
        print(f"results: {run_dir / 'results.json'}, summary: {run_dir / 'summary.md'}")
        for path in outcome.artifacts:
            print(f"{path.name}: {path}")
        if results["config"]["model"]["untrained"]:
            print("(untrained model: scores near chance are expected)", file=sys.stderr)
    return 0


def _vniah_options(args: argparse.Namespace) -> dict[str, Any]:
    from recot.eval.tasks.vniah import DEFAULT_DEPTHS, DEFAULT_FRAMES

    frames = _number_list("--grid-frames", args.grid_frames, int) or DEFAULT_FRAMES
    depths = _number_list("--depths", args.depths, float) or DEFAULT_DEPTHS
    if any(f < 1 for f in frames):
        raise UsageError(f"--grid-frames must be >= 1, got {args.grid_frames}")
    if any(not 0 <= d <= 100 for d in depths):
        raise UsageError(f"--depths must be percentages in [0, 100], got {args.depths}")
    return {
        "frames": frames,
        "depths": depths,
        "needle_seconds": args.needle_seconds or 1,
        "haystack": args.haystack.resolve() if args.haystack else None,
    }


def _default_haystack(cache_root: Path, progress: bool) -> Path:
    """The generated 1-hour sample video without its red-disc needle (written once into the cache)."""
    from recot.data.atomic import build_once
    from recot.data.sample_video import write_sample_video

    duration = 3600.0
    path = cache_root / "samples" / "haystack-1h-160x120-1fps.mp4"

    def write() -> None:
        print(f"recot eval: writing the haystack video (1 hour, once) to {path}", file=sys.stderr)
        write_sample_video(path, duration=duration, needle_at=duration, progress=progress)  # needle never on screen

    return build_once(path, write)


def _synthetic_needles(cache_root: Path) -> Path:
    from recot.eval.needle import SYNTHETIC_VERSION, write_synthetic_needles

    return write_synthetic_needles(cache_root / "needles" / SYNTHETIC_VERSION)
