"""Decoding overlapped with encoding, and decoding on several cores: the CPU targets of issue 10.

Side by side, in one run, each measurement in a fresh subprocess:

* ``decode``: reading the planned frames at the model's input size, alone:
  probe (the frame index), plan and decode
  (``recot.video.parallel.iter_frames_parallel``, ``--workers`` processes);
* ``encode``: encoding as many frames of the model's input size, already in
  memory, alone (``StreamingEncoder`` fed the engine's batches; random pixels:
  the values do not change the cost);
* ``ask``: the first question, no cache (``VideoChat.ask``: probe, plan,
  decoding in a background thread and worker processes, encoding, selection,
  answer);
* ``scaling``: decoding ``--scaling-frames`` frames with 1 and with N workers,
  at full resolution and at the model's input size.

Targets: ``ask`` <= 1.15 x max(``decode``, ``encode``) at the same worker count,
and ``scaling`` with 2 workers >= 1.6 x faster than with 1. Other processes
share the cores, so every measurement is repeated in ``--repeat`` rounds (the
median is reported, with the range), and each records the load average before
and after it and the CPU seconds it used (its own and its worker processes').
The model is the untrained ``small`` preset on CPU (weights do not change the
cost).

    python benchmarks/overlap.py                                    # the 1-hour 720p video of benchmarks/decode.py
    python benchmarks/overlap.py --video clip.mp4 --frames 256 --scaling-frames 512 --name overlap_quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEFAULT_VIDEO = Path.home() / ".cache" / "recot-bench" / "long_60min_1280x720_30fps_gop250.mp4"
NEEDS = ("av", "numpy", "torch", "transformers", "pydantic", "platformdirs", "filelock", "tqdm")


def missing_dependencies() -> list[str]:
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def worker(kind: str, video: str, frames: int, workers: int, size: str, model_dir: str) -> dict:
    """One measurement in this process; returns seconds, CPU seconds and what was produced."""
    import numpy as np
    import torch

    from recot.engine import FrameSampling, GenerationOptions, VideoChat
    from recot.model.encoder import StreamingEncoder
    from recot.video import plan_frames, probe
    from recot.video.parallel import iter_frames_parallel

    chat = VideoChat.from_pretrained(model_dir, decode_workers=workers, cache=False)  # every ask decodes and encodes
    config = chat.model.config
    chunk = config.compressor_batch_size * config.frames_per_group
    out_size = None if size == "full" else config.image_size
    row = {"kind": kind, "frames": frames, "workers": workers, "size": "full" if out_size is None else out_size}
    load_before = os.getloadavg()[0]
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    # "decode" reads the video as the engine does: probe (frame index), plan, decode. "scaling" times decoding only.
    plan = plan_frames(probe(video), num_frames=frames)
    if kind in ("scaling", "encode"):
        if kind == "encode":  # frames of the model's input size in memory (their values do not change the cost)
            pixels = np.random.default_rng(0).integers(0, 256, (frames, out_size, out_size, 3), dtype=np.uint8)
            batches = [(pixels[i : i + chunk], plan.timestamps[i : i + chunk]) for i in range(0, frames, chunk)]
        load_before = os.getloadavg()[0]
        cpu_before = cpu_seconds()
        started = time.perf_counter()
    if kind in ("decode", "scaling"):
        checksum = 0
        for batch in iter_frames_parallel(video, plan, batch_size=chunk, size=out_size, workers=workers):
            checksum += int(batch.frames[:, ::17, ::17].sum())
        row["checksum"] = checksum
    elif kind == "encode":
        with torch.inference_mode():
            encoder = StreamingEncoder(chat.model, len(plan))
            for frames_batch, times in batches:
                encoder.add(torch.from_numpy(frames_batch), times)
            row["groups"] = encoder.finish().num_groups
    else:
        answer = chat.ask(video, "What happens in this video?", GenerationOptions(max_new_tokens=16),
                          FrameSampling(num_frames=frames))  # fmt: skip
        row.update(encode_s=round(answer.timings.encode, 2), answer_s=round(answer.timings.answer, 2),
                   cache_hit=answer.cache_hit)  # fmt: skip
    row["seconds"] = round(time.perf_counter() - started, 2)
    row["cpu_seconds"] = round(cpu_seconds() - cpu_before, 1)
    row["load_before"], row["load_after"] = round(load_before, 2), round(os.getloadavg()[0], 2)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def run_child(*args: object) -> dict:
    cmd = [sys.executable, __file__, "--worker", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"measurement {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_rows(runs: list[dict]) -> list[dict]:
    """One row per measurement: the round with the median time (all its numbers), and the range over the rounds."""
    groups: dict[tuple, list[dict]] = {}
    for row in runs:
        groups.setdefault((row["kind"], row["workers"], row["size"]), []).append(row)
    rows = []
    for group in groups.values():
        ordered = sorted(group, key=lambda r: r["seconds"])
        rows.append({**ordered[(len(ordered) - 1) // 2], "rounds": len(ordered),
                     "min_seconds": ordered[0]["seconds"], "max_seconds": ordered[-1]["seconds"]})  # fmt: skip
    return rows


def report(rows: list[dict], meta: dict, name: str, runs: list[dict], out: Path = RESULTS) -> str:
    """Markdown: the overlap table, the scaling table and the two targets (medians over the rounds)."""
    from recot.data.atomic import atomic_write_text

    by = {(r["kind"], r["workers"], r["size"]): r for r in rows}

    def span(r: dict) -> str:
        return f"{r['seconds']:.1f}" + (f" ({r['min_seconds']:.1f}-{r['max_seconds']:.1f})" if r["rounds"] > 1 else "")

    lines = [
        f"# Decoding overlapped with encoding, and decoding on {meta['cpus']} cores",
        "",
        f"{meta['video']}; {meta['model']}; {meta['machine']}. Each measurement is a fresh process, repeated in "
        f"{meta['rounds']} round(s); the tables give the median (the faster middle round for an even count; range "
        "in brackets). `load` is the 1-minute load "
        "average before / after the median run (other processes share the cores); CPU s counts the process and its "
        "workers.",
        "",
        f"## First question at {meta['frames']} frames",
        "",
        "| decode workers | decode alone (s) | encode alone (s) | ask, first question (s) | ask / max(decode, encode) "
        "| decode + encode (s) | CPU s: decode / encode / ask | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    verdicts = []
    for workers in meta["workers"]:
        d, e, a = by.get(("decode", workers, meta["size"])), by.get(("encode", workers, meta["size"])), by.get(("ask", workers, meta["size"]))
        if not (d and e and a):
            continue
        ratio = a["seconds"] / max(d["seconds"], e["seconds"])
        loads = f"{d['load_before']:.1f}-{a['load_after']:.1f}"
        lines.append(f"| {workers} | {span(d)} | {span(e)} | {span(a)} | **{ratio:.2f}** "
                     f"| {d['seconds'] + e['seconds']:.1f} | {d['cpu_seconds']:.0f} / {e['cpu_seconds']:.0f} / "
                     f"{a['cpu_seconds']:.0f} | {loads} |")  # fmt: skip
        verdicts.append(f"ask <= 1.15 x max(decode, encode) with {workers} decode worker(s): "
                        f"{'met' if ratio <= 1.15 else 'NOT met'} ({ratio:.3f})")  # fmt: skip
    lines += [
        "",
        f"## Decoding {meta['scaling_frames']} frames",
        "",
        "| size | 1 worker (s) | N workers (s) | speed-up | CPU s: 1 / N | load |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for size in meta["scaling_sizes"]:
        one = by.get(("scaling", 1, size))
        for workers in meta["scaling_workers"]:
            many = by.get(("scaling", workers, size))
            if not (one and many) or workers == 1:
                continue
            speedup = one["seconds"] / many["seconds"]
            label = f"full ({meta['full_size']})" if size == "full" else f"{size}x{size} (model input)"
            lines.append(f"| {label} | {span(one)} | {span(many)} ({workers}) | **{speedup:.2f}x** "
                         f"| {one['cpu_seconds']:.0f} / {many['cpu_seconds']:.0f} "
                         f"| {one['load_before']:.1f}-{many['load_after']:.1f} |")  # fmt: skip
            if workers == 2:
                verdicts.append(f"decoding with 2 workers >= 1.6x faster than with 1 at {label}: "
                                f"{'met' if speedup >= 1.6 else 'NOT met'} ({speedup:.2f}x)")  # fmt: skip
    lines += ["", "Targets:", *[f"- {v}" for v in verdicts], "",
              f"Reproduce: `python benchmarks/overlap.py {' '.join(sys.argv[1:])}`".replace("  ", " "), ""]  # fmt: skip
    text = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=2) + "\n")
    atomic_write_text(out / f"{name}.md", text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--frames", type=int, default=1024, help="frames of the first-question comparison")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="decode workers to compare")
    parser.add_argument("--scaling-frames", type=int, default=4096)
    parser.add_argument("--scaling-workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--scaling-sizes", nargs="+", default=["model", "full"], choices=["model", "full"])
    parser.add_argument("--skip", nargs="*", default=[], choices=["overlap", "scaling"])
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every measurement (the median is reported)")
    parser.add_argument("--name", default="overlap", help="results file name (NAME.json, NAME.md)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if missing_dependencies():
        print(f"missing Python packages: {', '.join(missing_dependencies())} (pip install -e '.[bench]')", file=sys.stderr)
        return 2
    if args.worker:
        kind, video, frames, workers, size, model_dir = args.worker
        print(json.dumps(worker(kind, video, int(frames), int(workers), size, model_dir)))
        return 0
    if not args.video.is_file():
        print(f"{args.video} does not exist; generate the 1-hour 720p benchmark video with "
              "`python benchmarks/decode.py --counts 128` (once, 10-25 minutes) or pass --video", file=sys.stderr)  # fmt: skip
        return 2

    from recot.config import VideoXLProConfig
    from recot.engine.default_model import DEFAULT_PRESET, untrained_model_dir
    from recot.video import probe

    model_dir = untrained_model_dir(DEFAULT_PRESET)
    image_size = VideoXLProConfig.from_preset(DEFAULT_PRESET).image_size
    info = probe(args.video, index=False)
    sizes = {"model": image_size, "full": "full"}
    meta = {
        "video": f"{args.video.name} ({info.duration / 60:.0f} min, {info.width}x{info.height}, {info.avg_fps:g} fps)",
        "model": f"untrained '{DEFAULT_PRESET}' preset, float32, CPU ({image_size}x{image_size} input)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "full_size": f"{info.width}x{info.height}", "cpus": os.cpu_count(), "frames": args.frames, "workers": args.workers, "size": image_size,
        "scaling_frames": args.scaling_frames, "scaling_workers": args.scaling_workers,
        "scaling_sizes": [sizes[s] for s in args.scaling_sizes], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rounds": args.repeat,
    }  # fmt: skip
    runs = []
    plan = []
    if "overlap" not in args.skip:
        plan += [(kind, args.frames, w, "model") for w in args.workers for kind in ("decode", "encode", "ask")]
    if "scaling" not in args.skip:
        plan += [("scaling", args.scaling_frames, w, s) for s in args.scaling_sizes for w in args.scaling_workers]
    for repeat in range(args.repeat):  # whole rounds, so that a change in the machine's load touches every row
        for kind, frames, workers, size in plan:
            row = run_child(kind, args.video, frames, workers, size, model_dir)
            runs.append({**row, "round": repeat})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(report(median_rows(runs), meta, args.name, runs, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
