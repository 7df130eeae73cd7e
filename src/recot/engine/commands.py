"""``recot ask``, ``recot demo``, ``recot cache ls|clear`` and ``recot plan``.

Only the standard library is imported here; torch, transformers and the model
are imported inside the command functions, after the flags have been checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recot.cli import (
    EXIT_INPUT,
    EXIT_USAGE,
    HelpFormatter,
    UsageError,
    at_least,
    check_time_range,
    fraction,
    positive,
    report_error,
    visual_token_limit,
)

if TYPE_CHECKING:
    from recot.config import VideoXLProConfig
    from recot.engine.cache import EncodingCache
    from recot.engine.chat import Answer, FrameSampling, GenerationOptions, VideoChat
    from recot.engine.default_model import ModelSource

#: The demo's question about its video (recot.data.synthetic_qa.demo_spec), one the default model answers.
DEMO_QUESTION = "What is on screen at 37:12?"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ask``, ``demo``, ``cache`` and ``plan`` to the ``recot`` command."""
    ask = subparsers.add_parser(
        "ask",
        help="answer questions about a (long) video",
        description="Answer questions about a video, an image or a folder of frames. The video is encoded once\n"
        "(streamed, cached on disk) and every question reuses the encoding.\n\n"
        "  recot ask VIDEO QUESTION [QUESTION ...]\n"
        '  recot ask --jsonl rows.jsonl       # one {"video": ..., "question": ...} object a line',
        formatter_class=HelpFormatter,
    )
    ask.add_argument("video", nargs="?", help="video file, image or directory of frames")
    ask.add_argument("questions", nargs="*", metavar="QUESTION", help="one or more questions about it")
    ask.add_argument("--jsonl", type=Path, metavar="FILE",
                     help='rows {"video": ..., "question": ...} instead (relative video paths: from the file\'s folder); '
                          "bad rows are reported and the good ones answered")  # fmt: skip
    _ask_options(ask)
    ask.set_defaults(func=run_ask)

    demo = subparsers.add_parser(
        "demo",
        help="answer a question about a generated hour-long sample video (the main job, no downloads)",
        description="Run `recot ask` on a generated one-hour sample video (written once into the cache directory):\n"
        "a held-out video of the synthetic QA generator that the default model was trained on (never this video).",
        formatter_class=HelpFormatter,
    )
    demo.add_argument("questions", nargs="*", metavar="QUESTION", default=[DEMO_QUESTION],
                      help=f"questions (default: {DEMO_QUESTION!r})")  # fmt: skip
    _ask_options(demo)
    demo.set_defaults(func=run_demo, video=None, jsonl=None)

    cache = subparsers.add_parser(
        "cache", help="list or clear the encoded-video cache", description="List or clear the encoded-video cache."
    )
    cache_sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    ls = cache_sub.add_parser("ls", help="list cached encodings, most recently used first",
                              description="List cached encodings, most recently used first.", formatter_class=HelpFormatter)  # fmt: skip
    _cache_args(ls)
    ls.add_argument("--json", action="store_true", help="one JSON object per entry (sizes in bytes, times in epoch seconds)")
    ls.set_defaults(func=run_cache_ls)
    clear = cache_sub.add_parser("clear", help="delete every cached encoding",
                                 description="Delete every cached encoding.", formatter_class=HelpFormatter)  # fmt: skip
    _cache_args(clear)
    clear.set_defaults(func=run_cache_clear)

    plan = subparsers.add_parser(
        "plan",
        help="expected peak memory of encoding and answering",
        description="Print the expected peak memory of encoding N frames and answering a question, before running.",
        formatter_class=HelpFormatter,
    )
    plan.add_argument("--frames", type=at_least(1), required=True, help="number of frames to encode")
    plan.add_argument("--model", help="model: 'default', a preset (small, tiny, videoxl-pro-3b) or a checkpoint "
                                      "directory (default: the default model)")  # fmt: skip
    plan.add_argument("--device", default="cpu", help="cpu or cuda; sets the default dtype, bfloat16 on cuda (default: %(default)s)")
    plan.add_argument("--dtype", help="float32, bfloat16 or float16 (default: bfloat16 on cuda, else float32)")
    _selection_args(plan)
    plan.add_argument("--attention", choices=("fused", "math"), default="fused", help="SDPA kernel assumed (default: %(default)s)")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON (bytes)")
    plan.set_defaults(func=run_plan)


def _ask_options(ask: argparse.ArgumentParser) -> None:
    """Model, sampling, selection, generation and cache options of ``ask`` and ``demo``."""
    ask.add_argument("--model", help="'default' (the trained model that ships with recot), an untrained preset "
                                     "(small, tiny) or a checkpoint directory (default: default)")  # fmt: skip
    ask.add_argument("--dtype", help="float32, bfloat16 or float16 (default: float32)")
    ask.add_argument("--device", help="cpu, cuda, cuda:1, mps, ... (default: cpu)")
    frames = ask.add_mutually_exclusive_group()
    frames.add_argument("--frames", type=at_least(1), metavar="N", help="sample N frames uniformly")
    frames.add_argument("--fps", type=positive, metavar="F",
                        help="sample F frames a second (default: 1, at most 4096 frames)")  # fmt: skip
    ask.add_argument("--max-frames", type=at_least(1), metavar="M",
                     help="cap on the number of frames (default: none with --frames, 4096 otherwise)")  # fmt: skip
    ask.add_argument("--start", type=at_least(0.0, float), metavar="SEC", help="first second of the video to use (default: 0)")
    ask.add_argument("--end", type=at_least(0.0, float), metavar="SEC", help="use the video before this second (default: its end)")
    _selection_args(ask)
    ask.add_argument("--do-sample", action="store_true", help="sample the answer instead of greedy decoding")
    ask.add_argument("--temperature", type=positive, default=1.0, metavar="X", help="sampling temperature, with --do-sample (default: %(default)s)")
    ask.add_argument("--top-p", type=fraction, default=1.0, metavar="P", help="nucleus sampling mass, with --do-sample (default: %(default)s)")
    ask.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the sampler: sampling is reproducible (default: %(default)s)")
    ask.add_argument("--json", action="store_true", help="print one JSON record per answer")
    _cache_args(ask)
    ask.add_argument("--no-cache", action="store_true", help="neither read nor write the encode cache")
    ask.add_argument("--no-progress", action="store_true", help="no progress bars")
    ask.add_argument("--decode-workers", type=at_least(1), metavar="N",
                     help="processes decoding a video (default: every core for long videos, 1 for short ones)")  # fmt: skip
    ask.add_argument("--compile", action="store_true",
                     help="torch.compile the vision tower and the compressor (faster on a GPU once compiled)")  # fmt: skip


def _selection_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``ask`` and ``plan``: the selector's budget and the answer length."""
    parser.add_argument("--keep-ratio", type=fraction, metavar="R",
                        help="share of visual tokens the selector keeps (default: the model's; 0.85 released, "
                             "1.0 for the default model)")  # fmt: skip
    parser.add_argument("--max-visual-tokens", type=visual_token_limit, metavar="K|all",
                        help="most visual tokens the LLM may see (default: the model's own budget, 64 for the "
                             "default model, else what fits its context; all: keep-ratio "
                             "of every one, as the released model does, past the 32K context)")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=at_least(1), default=128, metavar="T",
                        help="longest answer, in tokens (default: %(default)s)")  # fmt: skip


def _cache_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="cache root (default: $RECOT_CACHE_DIR, else the user cache dir)")
    parser.add_argument("--cache-size", type=_cache_size, metavar="SIZE", help="size limit, e.g. 20GB (default: $RECOT_CACHE_SIZE, else 20GB)")


def _cache_size(text: str) -> int:
    from recot.engine.cache import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ----- ask -----------------------------------------------------------------------
@dataclass
class Row:
    """One (video, question) to answer; ``line`` is the row's line in a ``--jsonl`` file (None on the command line)."""

    video: str
    question: str
    line: int | None = None


@dataclass
class BadRow:
    """A row that cannot be answered, and why (printed as an error record)."""

    line: int | None
    video: str | None
    error: str

    def record(self) -> dict[str, Any]:
        return {"line": self.line, "video": self.video, "error": self.error}


def read_rows(path: Path) -> tuple[list[Row], list[BadRow]]:
    """The rows of a JSONL file of ``{"video": ..., "question": ...}`` objects, and the lines that are not such rows.

    Blank lines are skipped; relative video paths are taken from the file's folder.
    Raises ``OSError`` when the file cannot be read.
    """
    from pydantic import BaseModel, ConfigDict, ValidationError

    class AskRow(BaseModel):
        model_config = ConfigDict(extra="forbid")
        video: str
        question: str

    def video_path(video: str) -> str:
        resolved = Path(video).expanduser()
        return str(resolved if resolved.is_absolute() else path.parent / resolved)

    rows, bad = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = AskRow.model_validate_json(line)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
            video = _string_field(line, "video")
            bad.append(BadRow(number, None if video is None else video_path(video), problems))
            continue
        if not row.question.strip():
            bad.append(BadRow(number, video_path(row.video), "the question is empty"))
            continue
        rows.append(Row(video_path(row.video), row.question, number))
    return rows, bad


def _string_field(line: str, name: str) -> str | None:
    """The string field ``name`` of a JSON line that failed validation, if it has one."""
    try:
        value = json.loads(line).get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class _InputError(Exception):
    """A model that cannot be loaded, or a video that cannot be answered about (unreadable, too long, out of memory)."""


def run_ask(args: argparse.Namespace) -> int:
    """``recot ask``: answer each question. Flags are checked first (exit 2), then inputs (exit 1)."""
    command = args.command_name
    try:
        if args.jsonl is not None and (args.video or args.questions):
            raise UsageError("give either VIDEO QUESTION... or --jsonl FILE, not both")
        if args.jsonl is None and (not args.video or not args.questions):
            raise UsageError("give a VIDEO and at least one QUESTION (or --jsonl FILE)")
        if any(not q.strip() for q in args.questions):
            raise UsageError("a QUESTION is empty")
        check_time_range(args.start, args.end)
        _check_dtype(args.dtype)
        _check_device(args.device)
        cache = None if args.no_cache else _open_cache(args)
    except UsageError as exc:
        return report_error(command, str(exc), EXIT_USAGE)

    from recot.engine.chat import FrameSampling, GenerationOptions
    from recot.engine.default_model import resolve_model

    try:
        source = resolve_model(args.model)
    except ValueError as exc:
        return report_error(command, f"cannot load the model: {exc}")
    if args.jsonl is not None:
        try:
            rows, bad = read_rows(args.jsonl)
        except OSError as exc:
            return report_error(command, f"--jsonl: cannot read {args.jsonl}: {exc.strerror or exc}")
        if not rows and not bad:
            return report_error(command, f"--jsonl: {args.jsonl} has no rows")
    else:
        rows, bad = [Row(args.video, q) for q in args.questions], []

    for failure in bad:
        _print_failure(args, failure)
    if not rows:
        return _batch_summary(args, 0, bad)
    try:
        chat = _load_chat(args, source, cache)
    except _InputError as exc:
        return report_error(command, str(exc))
    options = GenerationOptions(
        keep_ratio=args.keep_ratio, max_visual_tokens=args.max_visual_tokens, max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
    )  # fmt: skip
    sampling = FrameSampling(args.frames, args.fps, args.max_frames, args.start, args.end)

    answered = 0
    for group in _by_video(rows).values():
        try:
            answers = _answer(chat, group, options, sampling)
        except _InputError as exc:
            if args.jsonl is None:
                return report_error(command, str(exc))
            for row in group:
                failure = BadRow(row.line, row.video, str(exc))
                bad.append(failure)
                _print_failure(args, failure)
            continue
        for row, answer in zip(group, answers, strict=True):
            _print_answer(args, row, answer, many=len(rows) + len(bad) > 1)
        answered += len(answers)
    return _batch_summary(args, answered, bad) if args.jsonl is not None else 0


def _answer(chat: VideoChat, rows: list[Row], options: GenerationOptions, sampling: FrameSampling) -> list[Answer]:
    import torch

    from recot.video import VideoDecodeError

    try:
        return chat.ask_many([(r.video, r.question) for r in rows], options, sampling)
    except (VideoDecodeError, ValueError, OSError) as exc:
        raise _InputError(str(exc)) from exc
    except torch.cuda.OutOfMemoryError as exc:
        raise _InputError(
            "out of GPU memory; sample fewer frames (--max-frames, --fps) or see `recot plan` for what fits"
        ) from exc
    except torch._dynamo.exc.TorchDynamoException as exc:  # only --compile reaches torch.compile
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _InputError(f"--compile: torch.compile failed on this machine ({reason}); run without --compile") from exc


def _by_video(rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.video, []).append(row)
    return groups


def _print_answer(args: argparse.Namespace, row: Row, answer: Answer, many: bool) -> None:
    from tqdm import tqdm

    if args.json:
        record = answer.model_dump()
        if row.line is not None:
            record = {"line": row.line, **record}
        print(json.dumps(record), flush=True)
        return
    if many:
        print(f"Q: {answer.question}")
    print(answer.answer or f"(no visible text; generated token ids: {answer.token_ids})", flush=True)
    tqdm.write(
        f"[{answer.frames} frames, {answer.visual_tokens_kept}/{answer.visual_tokens} visual tokens kept, "
        f"{'cached' if answer.cache_hit else 'encoded'} in {answer.timings.encode:.2f} s, "
        f"answered in {answer.timings.answer:.2f} s]",
        file=sys.stderr,
    )


def _print_failure(args: argparse.Namespace, failure: BadRow) -> None:
    """An error record on stdout with ``--json``, else an error line on stderr."""
    if args.json:
        print(json.dumps(failure.record()), flush=True)
    else:
        where = f"{args.jsonl}, line {failure.line}: " if failure.line is not None else ""
        report_error(args.command_name, where + failure.error)


def _batch_summary(args: argparse.Namespace, answered: int, bad: list[BadRow]) -> int:
    if not bad:
        return 0
    lines = ", ".join(str(b.line) for b in sorted(bad, key=lambda b: b.line or 0))
    return report_error(args.command_name, f"{len(bad)} of {answered + len(bad)} rows failed (lines {lines}); "
                                           f"{answered} answered")  # fmt: skip


def _load_chat(args: argparse.Namespace, source: ModelSource, cache: EncodingCache | None) -> VideoChat:
    """The ``VideoChat`` of ``--model`` (an untrained preset is built under ``--cache-dir`` even with ``--no-cache``)."""
    from recot.engine.chat import VideoChat

    try:
        directory = source.checkpoint_dir(args.cache_dir)
        if source.untrained:
            print(f"recot {args.command_name}: note: using {source.describe()}; answers are meaningless. "
                  "Pass --model DIR for a trained checkpoint.", file=sys.stderr)  # fmt: skip
        return VideoChat.from_pretrained(
            directory, dtype=args.dtype, device=args.device, cache=cache if cache is not None else False,
            progress=not args.no_progress, decode_workers=args.decode_workers, compile=args.compile,
        )  # fmt: skip
    except (ValueError, OSError) as exc:  # CheckpointError included; OSError: building a preset in the cache dir
        raise _InputError(f"cannot load the model: {exc}") from exc


def _open_cache(args: argparse.Namespace) -> EncodingCache:
    from recot.engine.cache import EncodingCache

    try:
        return EncodingCache(args.cache_dir, args.cache_size)
    except ValueError as exc:  # $RECOT_CACHE_SIZE
        raise UsageError(str(exc)) from exc


def _check_dtype(dtype: str | None) -> None:
    from recot.model.checkpoint import parse_dtype

    try:
        parse_dtype(dtype)
    except ValueError as exc:
        raise UsageError(f"--dtype: {exc}") from exc


def _check_device(device: str | None) -> None:
    """Raise :class:`UsageError` naming ``--device`` unless torch can use that device on this machine."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a device torch knows (use cpu, cuda, cuda:1, mps, ...)") from None
    if parsed.type == "cuda":
        if not torch.backends.cuda.is_built():
            raise UsageError(f"--device {device}: this PyTorch build has no CUDA support")
        count = torch.cuda.device_count()
        if count == 0:
            raise UsageError(f"--device {device}: no CUDA device is available on this machine")
        if parsed.index is not None and parsed.index >= count:
            raise UsageError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available on this machine")


def run_demo(args: argparse.Namespace) -> int:
    """``recot demo``: ``recot ask`` on the generated sample video (written once into the cache dir)."""
    from tqdm import tqdm

    from recot.data.atomic import build_once
    from recot.data.clock import clock_time
    from recot.data.synthetic_qa import DEMO_SEED, demo_spec, parse_time, write_video
    from recot.engine.cache import resolve_cache_dir

    spec = demo_spec()
    video = resolve_cache_dir(args.cache_dir) / "samples" / f"qa-test-{DEMO_SEED}-1h-64px-1fps.mp4"

    def write() -> None:
        print(f"recot demo: writing the sample video (1 hour, once) to {video}", file=sys.stderr)
        with tqdm(total=spec.num_frames, unit="frame", desc="sample video", disable=args.no_progress) as bar:
            write_video(spec, video, on_frames=bar.update)

    try:
        build_once(video, write)
    except OSError as exc:
        return report_error(args.command_name, f"cannot write the sample video {video}: {exc}")
    seconds = parse_time(DEMO_QUESTION)
    print(f"recot demo: {video} (generated, held out; the scene at {clock_time(seconds)} is "
          f"{spec.scene_at(seconds)!r})", file=sys.stderr)  # fmt: skip
    args.video = str(video)
    return run_ask(args)


# ----- cache ------------------------------------------------------------------------
def run_cache_ls(args: argparse.Namespace) -> int:
    """``recot cache ls``: one line per entry, most recently used first."""
    import datetime

    from recot.engine.memory import format_bytes

    try:
        cache = _open_cache(args)
    except UsageError as exc:
        return report_error(args.command_name, str(exc), EXIT_USAGE)
    try:
        entries = cache.entries()
    except OSError as exc:
        return report_error(args.command_name, f"cannot read the cache {cache.root}: {exc}")
    if args.json:
        for entry in entries:
            print(json.dumps(entry.record()))
        return 0
    print(f"{cache.entries_dir}: {len(entries)} entries, {format_bytes(sum(e.size for e in entries))} "
          f"of {format_bytes(cache.max_bytes)}")  # fmt: skip
    for e in entries:
        used = datetime.datetime.fromtimestamp(e.last_used).strftime("%Y-%m-%d %H:%M")
        frames = "?" if e.frames is None else e.frames
        print(f"{e.key[:12]}  {format_bytes(e.size):>10}  {used}  {frames:>6} frames  {e.metadata.get('video', e.metadata.get('error', ''))}")
    return 0


def run_cache_clear(args: argparse.Namespace) -> int:
    """``recot cache clear``: delete every entry."""
    try:
        cache = _open_cache(args)
    except UsageError as exc:
        return report_error(args.command_name, str(exc), EXIT_USAGE)
    try:
        removed = cache.clear()
    except OSError as exc:
        return report_error(args.command_name, f"cannot clear the cache {cache.root}: {exc}")
    print(f"removed {removed} cached encodings from {cache.entries_dir}")
    return 0


# ----- plan -----------------------------------------------------------------------------
def run_plan(args: argparse.Namespace) -> int:
    """``recot plan``: the memory estimate of :func:`recot.engine.memory.plan_memory`."""
    try:
        _check_dtype(args.dtype)
    except UsageError as exc:
        return report_error(args.command_name, str(exc), EXIT_USAGE)

    from recot.engine.default_model import resolve_model
    from recot.engine.memory import format_bytes, plan_memory

    try:
        source = resolve_model(args.model)
        config = source.config()
        time_tokens = _time_text_tokens(source, config, seconds=float(args.frames))
    except (ValueError, OSError) as exc:
        return report_error(args.command_name, f"cannot read the model: {exc}", EXIT_INPUT)
    dtype = args.dtype or ("bfloat16" if str(args.device).startswith("cuda") else "float32")
    try:
        plan = plan_memory(
            config, args.frames, time_tokens, dtype=dtype, keep_ratio=args.keep_ratio, max_visual_tokens=args.max_visual_tokens,
            max_new_tokens=args.max_new_tokens, attention=args.attention,
        )  # fmt: skip
    except ValueError as exc:  # too many frames for the model's context
        return report_error(args.command_name, str(exc), EXIT_USAGE)
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


def _time_text_tokens(source: ModelSource, config: VideoXLProConfig, seconds: float) -> int:
    """Tokens of the timestamp text of a group at ``seconds`` (the last frame's time at 1 fps: texts only grow
    with the time, ``59:59`` to ``1:00:00``), measured with the model's tokenizer where there is one."""
    from recot.engine.memory import qwen25_time_text_tokens
    from recot.model.processor import VideoXLProProcessor
    from recot.model.tokenizer import build_byte_tokenizer

    if source.directory is not None:
        return VideoXLProProcessor.from_pretrained(source.directory).time_text_tokens(seconds)
    if source.preset == "videoxl-pro-3b":
        return qwen25_time_text_tokens(seconds)  # its Qwen2.5 tokenizer does not ship with recot
    # The small presets are paired with the byte tokenizer (the default model ships with it).
    return VideoXLProProcessor(build_byte_tokenizer(), config).time_text_tokens(seconds)
