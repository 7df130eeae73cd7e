"""``recot ask``, ``recot demo``, ``recot cache ls|clear`` and ``recot plan``.

``recot ask VIDEO QUESTION [QUESTION ...]`` or ``recot ask --jsonl FILE``
answers questions, encoding each video once (and caching it); ``--json``
prints one JSON record per answer. ``recot demo`` does the same on a generated
hour-long sample video. ``recot plan --frames N`` prints the expected peak
memory of encoding and answering.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import warnings
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from tqdm.auto import tqdm

from recot.cli import report_error
from recot.config import VideoXLProConfig
from recot.engine.cache import CacheCorruptWarning, EncodingCache
from recot.engine.chat import FrameSampling, GenerationOptions, VideoChat, parse_visual_token_limit
from recot.engine.default_model import DEFAULT_PRESET, default_model_dir
from recot.engine.memory import QWEN25_TIME_TEXT_TOKENS, format_bytes, plan_memory
from recot.model.checkpoint import CheckpointError, parse_dtype
from recot.video import VideoDecodeError


class AskRow(BaseModel):
    """One line of a ``--jsonl`` file: a video path (relative paths: to the file's directory) and a question."""

    model_config = ConfigDict(extra="forbid")

    video: str
    question: str


DEMO_QUESTION = "When does the big red disc appear, and for how long?"


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ask``, ``demo``, ``cache`` and ``plan`` to the ``recot`` command."""
    ask = subparsers.add_parser("ask", help="answer questions about a (long) video", description=__doc__)
    ask.add_argument("video", nargs="?", help="video file, image or directory of frames")
    ask.add_argument("questions", nargs="*", metavar="QUESTION", help="one or more questions")
    ask.add_argument("--jsonl", type=Path, help="file of {\"video\": ..., \"question\": ...} rows instead")
    _ask_options(ask)
    ask.set_defaults(func=run_ask)

    demo = subparsers.add_parser(
        "demo", help="answer a question about a generated hour-long sample video (the main job, no downloads)"
    )
    demo.add_argument("questions", nargs="*", metavar="QUESTION", default=[DEMO_QUESTION], help=f"default: {DEMO_QUESTION!r}")
    _ask_options(demo)
    demo.set_defaults(func=run_demo, video=None, jsonl=None)

    cache = subparsers.add_parser("cache", help="list or clear the encoded-video cache")
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    ls = cache_sub.add_parser("ls", help="list cached encodings, most recently used first")
    _cache_args(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_cache_ls)
    clear = cache_sub.add_parser("clear", help="delete every cached encoding")
    _cache_args(clear)
    clear.set_defaults(func=run_cache_clear)

    plan = subparsers.add_parser("plan", help="expected peak memory of encoding and answering")
    plan.add_argument("--frames", type=int, required=True, help="number of frames to encode")
    plan.add_argument("--model", help="model directory (its config.json) or preset name (default: the default model)")
    plan.add_argument("--device", default="cpu", help="cpu or cuda; sets the default dtype (cuda: bfloat16)")
    plan.add_argument("--dtype", help="float32, bfloat16 or float16")
    plan.add_argument("--keep-ratio", type=float)
    plan.add_argument("--max-visual-tokens", type=_visual_token_limit, metavar="K|all",
                      help="most visual tokens the LLM may see (default: what fits its context; all: no cap)")
    plan.add_argument("--max-new-tokens", type=int, default=128)
    plan.add_argument("--attention", choices=("fused", "math"), default="fused", help="SDPA kernel assumed")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func=run_plan)


def _ask_options(ask: argparse.ArgumentParser) -> None:
    """Model, sampling, selection, generation and cache options of ``ask`` and ``demo``."""
    _model_args(ask)
    frames = ask.add_mutually_exclusive_group()
    frames.add_argument("--frames", type=int, help="sample N frames uniformly")
    frames.add_argument("--fps", type=float, help="sample F frames a second (default: 1, at most 4096 frames)")
    ask.add_argument("--max-frames", type=int, help="cap on the number of frames")
    ask.add_argument("--start", type=float, help="first second of the video to use")
    ask.add_argument("--end", type=float, help="last second of the video to use")
    ask.add_argument("--keep-ratio", type=float, help="share of visual tokens the selector keeps (default: model's)")
    ask.add_argument("--max-visual-tokens", type=_visual_token_limit, metavar="K|all",
                     help="most visual tokens the LLM may see (default: what fits its context; all: keep-ratio of "
                          "every one, as the released model does, past the 32K context)")
    ask.add_argument("--max-new-tokens", type=int, default=128)
    ask.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    ask.add_argument("--temperature", type=float, default=1.0)
    ask.add_argument("--top-p", type=float, default=1.0)
    ask.add_argument("--seed", type=int, default=0, help="seed of the sampler (sampling is reproducible)")
    ask.add_argument("--json", action="store_true", help="print one JSON record per answer")
    _cache_args(ask)
    ask.add_argument("--no-cache", action="store_true", help="neither read nor write the encode cache")
    ask.add_argument("--no-progress", action="store_true", help="no progress bars")
    ask.add_argument("--decode-workers", type=_positive_int, metavar="N",
                     help="processes decoding a video (default: every core for long videos, 1 for short ones)")
    ask.add_argument("--compile", action="store_true",
                     help="torch.compile the vision tower and the compressor (faster on a GPU after compiling)")


def _visual_token_limit(text: str) -> int | str:
    try:
        return parse_visual_token_limit(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: the untrained default model)")
    parser.add_argument("--dtype", help="float32 (default), bfloat16 or float16")
    parser.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")


def _cache_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, help="cache root (default: $RECOT_CACHE_DIR or the user cache dir)")
    parser.add_argument("--cache-size", help="size limit, e.g. 20GB (default: $RECOT_CACHE_SIZE or 20GB)")


# ----- ask -----------------------------------------------------------------------
def read_rows(path: Path) -> list[tuple[str, str]]:
    """(video, question) pairs of a JSONL file; errors name the line."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = AskRow.model_validate_json(line)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
            raise UsageError(f"{path}, line {number}: {problems}") from exc
        if not row.question.strip():
            raise UsageError(f"{path}, line {number}: the question is empty")
        video = Path(row.video).expanduser()
        rows.append((str(video if video.is_absolute() else path.parent / video), row.question))
    if not rows:
        raise UsageError(f"{path} has no rows")
    return rows


def _ask_items(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.jsonl is not None:
        if args.video or args.questions:
            raise UsageError("give either VIDEO QUESTION... or --jsonl, not both")
        return read_rows(args.jsonl)
    if not args.video or not args.questions:
        raise UsageError("give a VIDEO and at least one QUESTION (or --jsonl FILE)")
    for question in args.questions:
        if not question.strip():
            raise UsageError("a question is empty")
    return [(args.video, q) for q in args.questions]


def run_ask(args: argparse.Namespace) -> int:
    """``recot ask``: answer each question; exit 1 on a bad video or model, 2 on bad usage."""
    try:
        items = _ask_items(args)
        options = GenerationOptions(
            keep_ratio=args.keep_ratio, max_visual_tokens=args.max_visual_tokens, max_new_tokens=args.max_new_tokens,
            do_sample=args.do_sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
        )  # fmt: skip
        sampling = FrameSampling(args.frames, args.fps, args.max_frames, args.start, args.end)
        cache = None if args.no_cache else EncodingCache(args.cache_dir, args.cache_size)
        parse_dtype(args.dtype)
        _check_device(args.device)
    except ValueError as exc:  # UsageError included
        return report_error("ask", str(exc), 2)
    model_dir = args.model if args.model is not None else default_model_dir(args.cache_dir)
    try:
        chat = VideoChat.from_pretrained(model_dir, dtype=args.dtype, device=args.device, cache=cache, progress=not args.no_progress,
                                         decode_workers=args.decode_workers, compile=args.compile)  # fmt: skip
    except CheckpointError as exc:
        return report_error("ask", f"cannot load the model: {exc}")
    with warnings.catch_warnings():
        warnings.simplefilter("always", CacheCorruptWarning)
        try:
            answers = chat.ask_many(items, options, sampling)
        except (VideoDecodeError, ValueError, OSError) as exc:
            return report_error("ask", str(exc))
    for answer in answers:
        if args.json:
            print(answer.model_dump_json())
        else:
            if len(answers) > 1:
                print(f"Q: {answer.question}")
            print(answer.answer or f"(no visible text; generated token ids: {answer.token_ids})")
            tqdm.write(
                f"[{answer.frames} frames, {answer.visual_tokens_kept}/{answer.visual_tokens} visual tokens kept, "
                f"{'cached' if answer.cache_hit else 'encoded'} in {answer.timings.encode:.2f} s, "
                f"answered in {answer.timings.answer:.2f} s]",
                file=sys.stderr,
            )
    return 0


def _check_device(device: str | None) -> None:
    """Raise ``ValueError`` naming ``--device`` when torch does not know the device string."""
    if device is None:
        return
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a device torch knows (use cpu, cuda, cuda:1, ...): {exc}") from exc


def run_demo(args: argparse.Namespace) -> int:
    """``recot demo``: ``recot ask`` on the generated sample video (written once into the cache dir)."""
    from recot.data.atomic import build_once
    from recot.data.sample_video import write_sample_video
    from recot.engine.cache import resolve_cache_dir

    video = resolve_cache_dir(args.cache_dir) / "samples" / "sample-1h-160x120-1fps.mp4"

    def write() -> None:
        print(f"recot demo: writing the sample video (1 hour, once) to {video}", file=sys.stderr)
        write_sample_video(video, progress=not args.no_progress)

    build_once(video, write)
    print(f"recot demo: {video} (a red disc is on screen from 37:12 to 37:32)", file=sys.stderr)
    args.video = str(video)
    return run_ask(args)


# ----- cache ------------------------------------------------------------------------
def run_cache_ls(args: argparse.Namespace) -> int:
    """``recot cache ls``: one line per entry, most recently used first."""
    try:
        cache = EncodingCache(args.cache_dir, args.cache_size)
    except ValueError as exc:
        return report_error("cache", str(exc), 2)
    entries = cache.entries()
    if args.json:
        for e in entries:
            metadata = {k: v for k, v in e.metadata.items() if k != "frame_indices"}  # one line per entry stays short
            print(json.dumps({"key": e.key, "path": str(e.path), "size": e.size, "last_used": e.last_used, **metadata}))
        return 0
    print(f"{cache.entries_dir}: {len(entries)} entries, {format_bytes(sum(e.size for e in entries))} "
          f"of {format_bytes(cache.max_bytes)}")  # fmt: skip
    for e in entries:
        used = datetime.datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")
        frames = e.metadata.get("frames", "?")
        print(f"{e.key[:12]}  {format_bytes(e.size):>10}  {used}  {frames:>6} frames  {e.metadata.get('video', e.metadata.get('error', ''))}")
    return 0


def run_cache_clear(args: argparse.Namespace) -> int:
    """``recot cache clear``: delete every entry."""
    try:
        cache = EncodingCache(args.cache_dir, args.cache_size)
    except ValueError as exc:
        return report_error("cache", str(exc), 2)
    print(f"removed {cache.clear()} cached encodings from {cache.entries_dir}")
    return 0


# ----- plan -----------------------------------------------------------------------------
def run_plan(args: argparse.Namespace) -> int:
    """``recot plan``: the memory estimate of :func:`recot.engine.memory.plan_memory`."""
    try:
        config = _plan_config(args.model)
        dtype = args.dtype or ("bfloat16" if str(args.device).startswith("cuda") else "float32")
        plan = plan_memory(
            config, args.frames, _time_text_tokens(args.model, config), dtype=dtype, keep_ratio=args.keep_ratio, max_visual_tokens=args.max_visual_tokens,
            max_new_tokens=args.max_new_tokens, attention=args.attention,
        )  # fmt: skip
    except (ValueError, KeyError) as exc:
        return report_error("plan", str(exc).strip("'\""), 2)
    if args.json:
        print(json.dumps(plan.to_dict()))
        return 0
    print(f"{args.frames} frames -> {plan.num_groups} groups, {plan.visual_tokens} visual tokens; "
          f"{plan.visual_tokens_kept} kept, LLM input {plan.llm_input_tokens} tokens ({plan.dtype}, {args.device})")  # fmt: skip
    for title, terms, peak in (("encode", plan.encode, plan.encode_peak), ("answer", plan.answer, plan.answer_peak)):
        print(f"{title} peak: {format_bytes(peak)}")
        for name, value in terms.items():
            print(f"  {name:<16} {format_bytes(value):>12}")
    print("  (answer peak = weights + token_store + the larger of selection [time_sequence + selector]\n"
          "   and prefill [llm_inputs + kv_cache + llm_activations]: they do not overlap)")  # fmt: skip
    print(f"peak: {format_bytes(plan.peak)} (plus the runtime itself: CUDA context or Python/PyTorch, a few hundred MiB)")
    if plan.beyond_context:
        print(f"note: the LLM input and the answer run {plan.beyond_context} tokens past the model's "
              f"{config.max_position_embeddings}-token context (--max-visual-tokens all)")  # fmt: skip
    return 0


def _time_text_tokens(model: str | None, config: VideoXLProConfig) -> int:
    """Tokens of one timestamp text, measured with the model's tokenizer where there is one."""
    from recot.model.processor import VideoXLProProcessor
    from recot.model.tokenizer import build_byte_tokenizer

    if model is not None and Path(model).is_dir():
        return VideoXLProProcessor.from_pretrained(model).time_text_tokens()
    if config.extra.get("preset") == "videoxl-pro-3b":
        return QWEN25_TIME_TEXT_TOKENS
    # The small presets are paired with the byte tokenizer (the default model ships with it).
    return VideoXLProProcessor(build_byte_tokenizer(), config).time_text_tokens()


def _plan_config(model: str | None) -> VideoXLProConfig:
    if model is None:
        return VideoXLProConfig.from_preset(DEFAULT_PRESET)
    path = Path(model)
    if path.is_dir():
        return VideoXLProConfig.load(path / "config.json")
    if path.exists() or "/" in model:
        raise ValueError(f"model directory {model} does not exist")
    return VideoXLProConfig.from_preset(model)
