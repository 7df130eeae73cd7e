"""Throughput and memory on one device: the table of issue 10, for any device (CUDA, MPS, CPU).

Sections (``--only`` / ``--skip`` pick some):

* ``pixels``   encode with pixel values already on the device (vision tower + compressor + projector +
               pool), for several (vision batch / compressor batch) chunk sizes;
* ``stages``   the same split into the vision tower and the rest, at one chunk (96 frames);
* ``engine``   the streaming encoder fed uint8 frames from the host (pinned on CUDA, prepared by a
               background thread, as ``VideoChat`` does) at 1K / 8K / 16K frames: frames/s, peak memory;
* ``ask``      a question on an 8K-frame encoding with the default context-capped budget, against the
               ``recot plan`` estimate;
* ``prefill``  the released operating point (``max_visual_tokens="all"``) at 2K / 8K frames: selection,
               prefill and 8 new tokens, peak memory;
* ``hour``     end to end on the generated 1-hour sample video at 1 fps (160x120, a red disc):
               decoding alone, then the first question (decode + encode + answer);
* ``compile``  encoding eager vs ``compile=True`` (vision tower and compressor in ``torch.compile``):
               compilation time, frames/s, largest token difference.

Weights are random (a fixed seed), built on the device in ``--dtype``: speed and memory do not
depend on their values. The tokenizer is recot's byte tokenizer (timestamps take a few more tokens
than with Qwen2.5's). Writes ``benchmarks/results/gpu_<device>.json`` and ``.md`` atomically.

    python benchmarks/gpu.py                                   # CUDA if present: 3B preset, bf16, < 5 min on an H100
    python benchmarks/gpu.py --device cpu --preset tiny --quick   # seconds: a smoke test of the script itself

On a machine without PyAV, pydantic or platformdirs (e.g. a GPU image with only torch and
transformers), carry wheels: see docs/gpu.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("pixels", "stages", "engine", "ask", "prefill", "hour", "compile")
# Import name -> pip name of every package recot needs at run time.
NEEDS = {
    "torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "safetensors": "safetensors",
    "av": "av", "numpy": "numpy", "PIL": "pillow", "tqdm": "tqdm", "pydantic": "pydantic",
    "platformdirs": "platformdirs", "filelock": "filelock", "yaml": "pyyaml",
}  # fmt: skip
# Issue 10's measurements (one H100 80GB, torch 2.11+cu130, 3B preset, bf16, commit a9d1826), for comparison.
ISSUE_H100 = {
    "pixels": "378 frames/s",
    "stages": "SigLIP 485 frames/s, compressor 1,713 frames/s",
    "engine": "417-428 frames/s; 8,192 frames 19.1 s, 10.5 GiB; 16,384 frames 39.2 s, 12.8 GiB",
    "ask": "8,192 frames: 2.55 s, 6,048 of 294,912 kept, 11.8 GiB (plan 11.35)",
    "prefill": "8,192 frames: 250,675 kept, 25.6 s, 40.0 GiB",
    "hour": "26.1 s, decoding alone 19.0 s",
    "compile": "SigLIP compiled 641 frames/s (+32%), 53 s to compile",
}
TARGETS = {"hour": "<= 12 s end to end", "compile": ">= 600 frames/s engine encode compiled", "prefill": "8,192 frames within 45 GiB"}


def missing_packages() -> list[str]:
    return [pip for module, pip in NEEDS.items() if importlib.util.find_spec(module) is None]


# ----- the device ----------------------------------------------------------------------------
class Device:
    """Synchronisation and peak-memory counters for CUDA, MPS or the CPU (process peak RSS)."""

    def __init__(self, name: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(name)
        self.type = self.device.type

    def sync(self) -> None:
        if self.type == "cuda":
            self.torch.cuda.synchronize(self.device)
        elif self.type == "mps":
            self.torch.mps.synchronize()

    def reset_peak(self) -> None:
        if self.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float:
        """Peak memory since ``reset_peak`` (CUDA: allocated tensors; elsewhere: the process's peak RSS, not resettable)."""
        if self.type == "cuda":
            return self.torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.type == "mps":
            return self.torch.mps.driver_allocated_memory() / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30

    def describe(self) -> str:
        if self.type == "cuda":
            return self.torch.cuda.get_device_name(self.device)
        return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores" if self.type == "cpu" else self.type

    def timed(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self.sync()
        started = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - started, out


# ----- the model --------------------------------------------------------------------------------
def build(preset: str, device: Device, dtype_name: str) -> tuple[Any, Any]:
    """Model with random weights (seed 0) built directly on the device in ``dtype``, and a byte-tokenizer processor."""
    import torch

    from recot import VideoXLPro, VideoXLProConfig, VideoXLProProcessor
    from recot.model.checkpoint import parse_dtype
    from recot.model.tokenizer import build_byte_tokenizer

    tokenizer = build_byte_tokenizer()
    # The byte tokenizer's <|vision_pad|> stands in for Qwen2.5's (id 151654); the vocabulary size stays the preset's.
    config = VideoXLProConfig.from_preset(preset, placeholder_token_id=tokenizer.convert_tokens_to_ids("<|vision_pad|>"))
    processor = VideoXLProProcessor(tokenizer, config)  # checks the placeholder before minutes of building
    dtype = parse_dtype(dtype_name)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device.device:
            model = VideoXLPro(config).eval()
    finally:
        torch.set_default_dtype(default)
    return model, processor


def host_batches(num_frames: int, batch: int, side: int, pin: bool) -> Iterator[tuple[Any, Any]]:
    """uint8 (B, side, side, 3) host frames with times, as the engine hands them to the encoder (a few distinct
    random batches reused, so that producing them costs little)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8) for _ in range(3)]
    for start in range(0, num_frames, batch):
        n = min(batch, num_frames - start)
        frames = torch.from_numpy(pool[(start // batch) % len(pool)][:n])
        yield (frames.pin_memory() if pin else frames), np.arange(start, start + n, dtype=np.float64)


def engine_encode(model: Any, device: Device, num_frames: int) -> tuple[float, Any]:
    """Seconds to stream-encode ``num_frames`` uint8 host frames, and the encoding (decode stands aside)."""
    import torch

    from recot.data.prefetch import prefetch
    from recot.model.encoder import StreamingEncoder

    config = model.config
    chunk = config.compressor_batch_size * config.frames_per_group

    def run() -> Any:
        with torch.inference_mode(), prefetch(host_batches(num_frames, chunk, config.image_size, device.type == "cuda")) as batches:
            encoder = StreamingEncoder(model, num_frames)
            for frames, times in batches:
                encoder.add(frames, times)
            return encoder.finish()

    return device.timed(run)


# ----- sections -----------------------------------------------------------------------------------
def section_pixels(model: Any, device: Device, args: argparse.Namespace) -> list[dict]:
    import torch

    config = model.config
    rows = []
    saved = (model.vision_tower.batch_size, config.compressor_batch_size)
    total = args.pixel_frames
    try:
        for vision_batch, groups in args.chunks:
            model.vision_tower.batch_size, config.compressor_batch_size = vision_batch, groups
            chunk = 4 * groups
            pixels = torch.randn(chunk, 3, config.image_size, config.image_size, device=device.device, dtype=model.dtype)
            repeats = max(1, total // chunk)
            with torch.inference_mode():
                model.encode_groups(pixels)  # warm-up
                seconds, _ = device.timed(lambda x=pixels, k=repeats: [model.encode_groups(x) for _ in range(k)])
            frames = repeats * chunk
            rows.append({"section": "pixels", "chunk": f"{vision_batch}/{groups}", "frames": frames,
                         "seconds": seconds, "frames_per_s": frames / seconds})  # fmt: skip
    finally:
        model.vision_tower.batch_size, config.compressor_batch_size = saved
    return rows


def section_stages(model: Any, device: Device, args: argparse.Namespace) -> list[dict]:
    import torch

    from recot.model.vision import resize_to_grid

    config = model.config
    n = 4 * config.compressor_batch_size
    repeats = max(1, args.pixel_frames // n)
    with torch.inference_mode():  # an inference tensor, as the encoder's: a compiled tower is not recompiled for it
        pixels = torch.randn(n, 3, config.image_size, config.image_size, device=device.device, dtype=model.dtype)
        features = model.vision_tower(pixels)
        vision_s, _ = device.timed(lambda: [model.vision_tower(pixels) for _ in range(repeats)])

        def rest() -> Any:
            grouped = model.group_features(resize_to_grid(features, config.grid_size))
            compressed = model.compressor(grouped)[:, :, 0].flatten(2).transpose(1, 2)
            return model.pool(model.projector(compressed))

        rest()
        rest_s, _ = device.timed(lambda: [rest() for _ in range(repeats)])
    frames = n * repeats
    return [{"section": "stages", "frames": n, "vision_s": vision_s / repeats, "vision_frames_per_s": frames / vision_s,
             "compressor_s": rest_s / repeats, "compressor_frames_per_s": frames / rest_s}]  # fmt: skip


def section_engine(model: Any, device: Device, args: argparse.Namespace) -> list[dict]:
    rows = []
    engine_encode(model, device, 4 * model.config.compressor_batch_size)  # warm-up
    for frames in args.engine_frames:
        device.reset_peak()
        seconds, _ = engine_encode(model, device, frames)
        rows.append({"section": "engine", "frames": frames, "seconds": seconds, "frames_per_s": frames / seconds,
                     "peak_gib": device.peak_gib()})  # fmt: skip
    return rows


def _encoded(model: Any, frames: int) -> Any:
    """An encoding of ``frames`` frames: random tokens of its shape (selection and the LLM cost the same for any)."""
    import torch

    from recot.model.encoder import EncodedVideo
    from recot.model.groups import GroupPlan

    config = model.config
    groups = GroupPlan.for_config(frames, config).num_groups
    tokens = torch.randn(groups, config.tokens_per_group, config.hidden_size, device=model.device, dtype=model.dtype)
    return EncodedVideo(tokens, torch.arange(groups, dtype=torch.float64) * 4)


def _answer(model: Any, processor: Any, device: Device, frames: int, limit: Any) -> dict:
    from recot.engine import BeyondContextWarning, GenerationOptions, VideoChat
    from recot.engine.chat import VideoEncoding
    from recot.engine.memory import plan_memory

    chat = VideoChat(model, processor)
    encoding = VideoEncoding("synthetic", _encoded(model, frames), frames, None, False, 0.0)
    options = GenerationOptions(max_new_tokens=8, max_visual_tokens=limit)
    device.reset_peak()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BeyondContextWarning)
        seconds, answer = device.timed(lambda: chat.ask(encoding, "What happens in this video?", options))
    plan = plan_memory(model.config, frames, processor.time_text_tokens(), dtype=model.dtype, max_visual_tokens=limit,
                       prompt_tokens=len(processor.tokenize_prompt("What happens in this video?")) - 1, max_new_tokens=8)  # fmt: skip
    return {"frames": frames, "seconds": seconds, "visual_tokens": answer.visual_tokens,
            "kept": answer.visual_tokens_kept, "llm_input_tokens": answer.llm_input_tokens, "new_tokens": answer.new_tokens,
            "peak_gib": device.peak_gib(), "plan_gib": plan.answer_peak / 2**30}  # fmt: skip


def section_ask(model: Any, processor: Any, device: Device, args: argparse.Namespace) -> list[dict]:
    return [{"section": "ask", **_answer(model, processor, device, args.ask_frames, None)}]


def section_prefill(model: Any, processor: Any, device: Device, args: argparse.Namespace) -> list[dict]:
    return [{"section": "prefill", **_answer(model, processor, device, frames, "all")} for frames in args.prefill_frames]


def section_hour(model: Any, processor: Any, device: Device, args: argparse.Namespace) -> list[dict]:
    from recot.data.sample_video import write_sample_video
    from recot.engine import FrameSampling, GenerationOptions, VideoChat
    from recot.video import plan_frames, probe
    from recot.video.parallel import default_decode_workers, iter_frames_parallel

    video = args.work_dir / f"sample-{args.hour_seconds}s-160x120-1fps.mp4"
    if not video.exists():
        write_sample_video(video, duration=args.hour_seconds, progress=False)
    config = model.config
    chunk = config.compressor_batch_size * config.frames_per_group

    def decode_alone(workers: int | None) -> int:
        plan = plan_frames(probe(video), fps=1, max_frames=4096)
        batches = iter_frames_parallel(video, plan, batch_size=chunk, size=config.image_size, workers=workers)
        return sum(len(b) for b in batches)

    decode_1_s, _ = device.timed(lambda: decode_alone(1))  # the single-process decoder (before this work)
    decode_s, frames = device.timed(lambda: decode_alone(None))
    workers = default_decode_workers(plan_frames(probe(video), fps=1, max_frames=4096), config.image_size)
    chat = VideoChat(model, processor)
    device.reset_peak()
    seconds, answer = device.timed(lambda: chat.ask(video, "When does the big red disc appear?",
                                                    GenerationOptions(max_new_tokens=8), FrameSampling(fps=1)))  # fmt: skip
    return [{"section": "hour", "frames": frames, "decode_workers": workers, "decode_s": decode_s, "decode_1_worker_s": decode_1_s, "seconds": seconds,
             "answer_s": answer.timings.answer, "peak_gib": device.peak_gib()}]  # fmt: skip


def section_compile(model: Any, device: Device, args: argparse.Namespace) -> list[dict]:
    import numpy as np
    import torch

    from recot.engine.chat import compile_encoder

    config = model.config
    frames = 4 * config.compressor_batch_size
    sample = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (frames, config.image_size, config.image_size, 3), dtype=np.uint8))
    times = torch.arange(frames, dtype=torch.float64)
    with torch.inference_mode():
        eager_tokens = model.encode_video(sample, times).tokens
    eager_s, _ = engine_encode(model, device, args.compile_frames)
    compile_encoder(model)
    with torch.inference_mode():
        first_s, compiled = device.timed(lambda: model.encode_video(sample, times))  # compiles
    engine_encode(model, device, args.compile_frames)  # every chunk shape of the timed run compiled before timing
    seconds, _ = engine_encode(model, device, args.compile_frames)
    difference = (compiled.tokens.float() - eager_tokens.float()).abs().max().item()
    [stages] = section_stages(model, device, args)  # where the compiled time goes (same chunk shapes: no recompiling)
    rows = [{"section": "compile", "frames": args.compile_frames, "eager_frames_per_s": args.compile_frames / eager_s,
             "compiled_frames_per_s": args.compile_frames / seconds, "compile_s": first_s,
             "max_token_difference": difference, "token_scale": eager_tokens.float().abs().max().item(),
             "vision_frames_per_s": stages["vision_frames_per_s"],
             "compressor_frames_per_s": stages["compressor_frames_per_s"]}]  # fmt: skip
    return rows


# ----- report ---------------------------------------------------------------------------------------
def markdown(meta: dict, rows: list[dict]) -> str:
    def fmt(x: float) -> str:
        return f"{x:,.0f}" if x >= 100 else f"{x:.2f}" if x < 10 else f"{x:.1f}"

    def mem(gib: float) -> str:
        return f"{gib:.1f} GiB" if gib >= 1 else f"{gib * 1024:.0f} MiB"

    lines = [f"# Throughput on {meta['device']}", "",
             f"Preset `{meta['preset']}` ({meta['dtype']}, random weights), torch {meta['torch']}, "
             f"{meta['cpus']} CPU cores, {meta['when']}. Command: `{meta['command']}`.", "",
             "| what | measured here | issue 10 (H100, a9d1826) |", "|---|---|---|"]  # fmt: skip
    shown: set[str] = set()
    for r in rows:
        s = r["section"]
        if "error" in r:
            what, got = f"`{s}`", f"failed: {r['error']}"
        elif s == "pixels":
            what, got = f"encode, pixels on the device, chunk {r['chunk']}", f"{fmt(r['frames_per_s'])} frames/s"
        elif s == "stages":
            what = f"stage split at {r['frames']} frames"
            got = (f"vision tower {r['vision_s']:.3f} s ({fmt(r['vision_frames_per_s'])} frames/s), compressor + "
                   f"projector + pool {r['compressor_s']:.3f} s ({fmt(r['compressor_frames_per_s'])} frames/s)")
        elif s == "engine":
            what = f"engine (`StreamingEncoder`, uint8 host frames), {r['frames']:,} frames"
            got = f"{r['seconds']:.2f} s, {fmt(r['frames_per_s'])} frames/s, peak {mem(r['peak_gib'])}"
        elif s in ("ask", "prefill"):
            label = "context-capped budget" if s == "ask" else "`max_visual_tokens='all'` (released operating point)"
            what = f"question on {r['frames']:,} frames, {label}"
            got = (f"{r['seconds']:.2f} s, {r['kept']:,} of {r['visual_tokens']:,} visual tokens kept, LLM input "
                   f"{r['llm_input_tokens']:,}, {r['new_tokens']} new tokens, peak {mem(r['peak_gib'])} "
                   f"(`recot plan`: {mem(r['plan_gib'])})")
        elif s == "hour":
            what = f"end to end, sample video at 1 fps ({r['frames']:,} frames)"
            got = (f"{r['seconds']:.1f} s (answer {r['answer_s']:.2f} s); decoding alone {r['decode_s']:.1f} s "
                   f"with {r['decode_workers']} worker(s), {r['decode_1_worker_s']:.1f} s with 1")
        else:
            what = f"`compile=True` vs eager, engine encode of {r['frames']:,} frames"
            got = (f"{fmt(r['compiled_frames_per_s'])} vs {fmt(r['eager_frames_per_s'])} frames/s; compiling "
                   f"{r['compile_s']:.0f} s; largest token difference {r['max_token_difference']:.3g} "
                   f"(tokens up to {r['token_scale']:.3g}); compiled stages: vision tower "
                   f"{fmt(r['vision_frames_per_s'])}, compressor + projector + pool {fmt(r['compressor_frames_per_s'])} frames/s")
        reference = ISSUE_H100[s] if s not in shown else ""
        shown.add(s)
        lines.append(f"| {what} | {got} | {reference} |")
    if meta["device_type"] != "cuda":
        lines += ["", "Peak memory off CUDA is the process's peak resident memory so far (it cannot be reset per row)."]
    lines += ["", "Targets (issue 10, H100): " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="videoxl-pro-3b")
    parser.add_argument("--device", help="cuda, mps or cpu (default: cuda when available)")
    parser.add_argument("--dtype", help="default: bfloat16 on cuda, float32 elsewhere")
    parser.add_argument("--quick", action="store_true", help="small frame counts and a 1-minute sample video (smoke test)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS)
    parser.add_argument("--skip", nargs="+", choices=SECTIONS, default=[])
    parser.add_argument("--out", type=Path, help="results path without suffix (default: benchmarks/results/gpu_<device>)")
    parser.add_argument("--work-dir", type=Path, help="where the sample video is written (default: a temporary directory)")
    args = parser.parse_args()

    missing = missing_packages()
    if missing:
        print(f"benchmarks/gpu.py: missing Python packages: {', '.join(missing)}.\n"
              f"On a machine without network access, download wheels elsewhere for the device's Python and platform\n"
              f"(pip download {' '.join(missing)} pydantic-core annotated-types typing-inspection -d wheels/ "
              f"--only-binary=:all: --python-version X.Y --platform manylinux2014_x86_64),\n"
              f"carry wheels/ over and `pip install --no-index --find-links wheels/ {' '.join(missing)}`; see docs/gpu.md.",
              file=sys.stderr)  # fmt: skip
        return 2

    import torch

    device = Device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    sections = [s for s in SECTIONS if s in (args.only or SECTIONS) and s not in args.skip]  # compile last
    if args.quick:
        args.pixel_frames, args.chunks = 8, [(4, 1), (8, 2)]
        args.engine_frames, args.ask_frames, args.prefill_frames = [16, 64], 64, [16, 64]
        args.hour_seconds, args.compile_frames = 60, 32
    else:
        args.pixel_frames, args.chunks = 768, [(60, 24), (192, 48), (384, 96)]
        args.engine_frames, args.ask_frames, args.prefill_frames = [1024, 8192, 16384], 8192, [2048, 8192]
        args.hour_seconds, args.compile_frames = 3600, 2048
    out = args.out or RESULTS / f"gpu_{device.type}{'_quick' if args.quick else ''}"
    meta = {"device": device.describe(), "device_type": device.type, "preset": args.preset, "dtype": dtype,
            "torch": torch.__version__, "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:]), "sections": sections, "quick": args.quick}  # fmt: skip

    from recot.data.atomic import atomic_write_text

    started = time.perf_counter()
    model, processor = build(args.preset, device, dtype)
    meta["build_s"] = time.perf_counter() - started
    rows: list[dict] = []
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> str:
        """Write what is measured so far: an unattended run that dies late keeps its earlier sections."""
        meta["total_s"] = time.perf_counter() - started
        atomic_write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        text = markdown(meta, rows)
        atomic_write_text(out.with_suffix(".md"), text)
        return text

    runners: dict[str, Callable[[], list[dict]]] = {
        "pixels": lambda: section_pixels(model, device, args),
        "stages": lambda: section_stages(model, device, args),
        "engine": lambda: section_engine(model, device, args),
        "ask": lambda: section_ask(model, processor, device, args),
        "prefill": lambda: section_prefill(model, processor, device, args),
        "hour": lambda: section_hour(model, processor, device, args),
        "compile": lambda: section_compile(model, device, args),  # changes the model in place: SECTIONS puts it last
    }
    failed = 0
    text = save()
    with tempfile.TemporaryDirectory() as tmp:
        args.work_dir = args.work_dir or Path(tmp)
        args.work_dir.mkdir(parents=True, exist_ok=True)
        for section in sections:
            t0 = time.perf_counter()
            try:
                new = runners[section]()
            except Exception as exc:  # one broken section must not cost the others' numbers
                failed += 1
                new = [{"section": section, "error": f"{type(exc).__name__}: {exc}"}]
                traceback.print_exc()
            for row in new:
                row["section_s"] = time.perf_counter() - t0
                print(json.dumps(row), file=sys.stderr, flush=True)
            rows += new
            if device.type == "cuda":
                torch.cuda.empty_cache()
            text = save()
    print(text)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')} in {meta['total_s']:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
