"""Peak memory and wall time of encoding a long video: the streaming engine against the released demo's way.

For each frame count (default 256, 1024, 4096, 8192), in a fresh subprocess each:

* ``engine``: ``VideoChat.encode`` (decode a batch -> encode a chunk -> keep only
  the compressed tokens), then two questions on the cached encoding;
* ``baseline``: what the released demo does: decode every sampled frame into
  memory at once, preprocess them all, run the vision tower over all of them
  (in batches, keeping every frame's features), then group, compress, project
  and pool; then one question.

Peak RSS is the child's ``ru_maxrss``. The model is the untrained ``small``
preset on CPU (weights do not change the cost). The video is generated once:
5 minutes of 30 fps, 160x120 h264 (9,000 frames), so 8,192 frames are distinct.

    python benchmarks/long_video.py                   # all frame counts, writes benchmarks/results/long_video.*
    python benchmarks/long_video.py --frames 256 1024 --out /tmp/run1   # a subset, into another folder
    python benchmarks/long_video.py --video hour_720p.mp4 --name long_video_720p   # a real-size video

Needs recot and matplotlib (the ``bench`` extra: ``pip install 'recot[bench]'``),
checked before any work. The result files (JSON, Markdown table, PNG plot) are
written only at the end, each atomically, so an interrupted or failed run leaves
the previous results as they were.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# module -> what provides it (recot brings torch, PyAV and numpy)
REQUIRED = {"recot": "recot", "matplotlib": "recot[bench]"}
QUESTIONS = ("What happens in this video?", "What colour is the last scene?")


def make_video(path: Path, seconds: int = 300, fps: int = 30, size: tuple[int, int] = (160, 120)) -> Path:
    """A synthetic video whose every frame differs (moving gradients), written once."""
    import av
    import numpy as np

    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "60"}
        for i in range(seconds * fps):
            frame = np.stack([(xs + 2 * i) % 256, (ys * 2 + i) % 256, np.full_like(xs, (i // 30 * 37) % 256)], -1)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame.astype(np.uint8), format="rgb24")))
        out.mux(stream.encode())
    tmp.rename(path)
    return path


def worker(mode: str, num_frames: int, video: str, model_dir: str) -> dict:
    """One measurement, run in its own process: encode (peak RSS recorded), then answer."""
    import torch

    from recot.engine import EncodingCache, FrameSampling, GenerationOptions, VideoChat, VideoEncoding
    from recot.model import EncodedVideo, group_frame_order
    from recot.model.vision import resize_to_grid
    from recot.video import read_frames

    torch.set_num_threads(2)
    options = GenerationOptions(max_new_tokens=16)
    sampling = FrameSampling(num_frames=num_frames)
    with tempfile.TemporaryDirectory() as cache_dir:
        chat = VideoChat.from_pretrained(model_dir, cache=EncodingCache(cache_dir, "10GB"))
        _ = chat.model_id  # hash the weights before timing
        model, config = chat.model, chat.model.config
        rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        result: dict = {"mode": mode, "frames": num_frames}
        started = time.perf_counter()
        if mode == "engine":
            encoding = chat.encode(video, sampling)
            assert not encoding.cache_hit
        else:
            with torch.no_grad():
                batch = read_frames(video, num_frames=num_frames, size=config.image_size)
                pixels = chat.processor.normalize(torch.from_numpy(batch.frames))
                features = model.vision_tower(pixels)  # every frame's features at once
                order = torch.tensor(group_frame_order(len(pixels), config.frames_per_group))
                grouped = model.group_features(resize_to_grid(features, config.grid_size)[order])
                compressed = torch.cat([model.compressor(c) for c in grouped.split(config.compressor_batch_size)])
                tokens = model.pool(model.projector(compressed[:, :, 0].flatten(2).transpose(1, 2)))
                times = torch.from_numpy(batch.timestamps)[order[:: config.frames_per_group]]
                del batch, pixels, features, grouped, compressed
            encoding = VideoEncoding(video, EncodedVideo(tokens, times), num_frames, None, False, 0.0)
        result["encode_s"] = time.perf_counter() - started
        result["encode_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        first = chat.ask(encoding, QUESTIONS[0], options)
        result["first_question_s"] = result["encode_s"] + first.timings.answer
        if mode == "engine":
            second = chat.ask(video, QUESTIONS[1], options, sampling)  # a new question: the encoding comes from disk
            assert second.cache_hit
            result["second_question_s"] = second.timings.total
        groups = first.groups
        result["token_bytes"] = groups * config.tokens_per_group * config.hidden_size * model.dtype.itemsize
        result["rss_after_load"] = rss_loaded
        result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return result


def run_child(mode: str, num_frames: int, video: Path, model_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, str(num_frames), str(video), str(model_dir)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def describe_video(video: Path) -> str:
    """'300 s, 30 fps, 160x120 h264' for the report."""
    from recot.video import probe

    info = probe(video, index=False)
    return f"{info.duration:.0f} s, {info.avg_fps:g} fps, {info.width}x{info.height} {info.codec}"


def missing_dependencies() -> list[str]:
    """The packages this benchmark needs that are not installed, with what to install ("matplotlib (recot[bench])")."""
    return [f"{module} ({extra})" for module, extra in REQUIRED.items() if importlib.util.find_spec(module) is None]


def write_report(rows: list[dict], video: Path, name: str = "long_video", out: Path = RESULTS, wall_seconds: float | None = None) -> None:
    """Write ``<out>/<name>.{json,md,png}``, each atomically (a temporary file renamed into place)."""
    from recot.data.atomic import atomic_path, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {_cpus()} CPUs", "python": platform.python_version(), "video": describe_video(video), "model": "untrained small preset, float32, CPU"}
    if wall_seconds is not None:
        meta["wall_seconds"] = round(wall_seconds, 1)

    by = {(r["mode"], r["frames"]): r for r in rows}
    frames = sorted({r["frames"] for r in rows})
    mib = 2**20
    lines = [
        "# Long-video encoding: streaming engine vs. the released demo's all-at-once encode",
        "",
        f"{meta['model']}; {meta['video']}; {meta['machine']}. Peak RSS of a fresh process (`ru_maxrss`) at the end "
        "of encoding, including Python, PyTorch and the model (~450 MiB); \"- tokens\" subtracts the compressed "
        "tokens (G x P x D x 4 bytes), which both must hold. \"with answer\" is the peak after also answering "
        "(selector + LLM prefill over up to 32K tokens, the same for both).",
        "",
        "| frames | engine encode peak (MiB) | engine - tokens | baseline encode peak (MiB) | baseline - tokens "
        "| engine with answer | engine encode (s) | baseline encode (s) | 1st question (s) | 2nd question, cached (s) | 1st / 2nd |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in frames:
        e, b = by.get(("engine", n)), by.get(("baseline", n))
        cells = [str(n)]
        for r in (e, b):
            cells += [f"{r['encode_peak_rss'] / mib:.0f}", f"{(r['encode_peak_rss'] - r['token_bytes']) / mib:.0f}"] if r else ["-", "-"]
        cells += [f"{e['peak_rss'] / mib:.0f}" if e else "-", f"{e['encode_s']:.1f}" if e else "-", f"{b['encode_s']:.1f}" if b else "-"]
        if e:
            cells += [f"{e['first_question_s']:.1f}", f"{e['second_question_s']:.2f}", f"{e['first_question_s'] / e['second_question_s']:.0f}x"]
        else:
            cells += ["-", "-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for mode in ("engine", "baseline"):
        if (mode, frames[0]) in by and (mode, frames[-1]) in by and frames[-1] != frames[0]:
            lo, hi = by[(mode, frames[0])], by[(mode, frames[-1])]
            growth = (hi["encode_peak_rss"] - hi["token_bytes"]) / (lo["encode_peak_rss"] - lo["token_bytes"])
            lines += ["", f"{mode.capitalize()} encode peak RSS (tokens aside) at {frames[-1]} frames / at {frames[0]} frames: **{growth:.2f}x**."]
    command = " ".join(["python benchmarks/long_video.py", *sys.argv[1:]])
    took = f"this run took {wall_seconds / 60:.0f} minutes on {meta['machine']}; " if wall_seconds is not None else ""
    lines += ["", f"Reproduce: `{command}` ({took}the default video is generated once under the recot cache directory).", ""]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mode, colour in (("engine", "tab:blue"), ("baseline", "tab:red")):
        pts = [by[(mode, n)] for n in frames if (mode, n) in by]
        xs = [r["frames"] for r in pts]
        ax.plot(xs, [r["encode_peak_rss"] / mib for r in pts], "o-", color=colour, label=f"{mode}: encode peak RSS")
        ax.plot(xs, [(r["encode_peak_rss"] - r["token_bytes"]) / mib for r in pts], "o--", color=colour, alpha=0.6, label=f"{mode}: minus compressed tokens")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("frames sampled")
    ax.set_ylabel("peak RSS (MiB)")
    ax.set_title("Encoding a long video: memory vs. frames (small preset, CPU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out / f"{name}.png", suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    atomic_write_text(out / f"{name}.md", "\n".join(lines))
    atomic_write_text(out / f"{name}.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[256, 1024, 4096, 8192])
    parser.add_argument("--modes", nargs="+", default=["engine", "baseline"], choices=["engine", "baseline"])
    parser.add_argument("--video", type=Path, help="benchmark this video instead of the generated 300 s 160x120 one")
    parser.add_argument("--name", default="long_video", help="results file name (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: benchmarks/results)")
    parser.add_argument("--worker", nargs=4, metavar=("MODE", "N", "VIDEO", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, n, video, model_dir = args.worker
        print(json.dumps(worker(mode, int(n), video, model_dir)))
        return

    missing = missing_dependencies()
    if missing:
        sys.exit(f"benchmarks/long_video.py: missing {', '.join(missing)}: pip install -e '.[bench]'")
    if args.video is not None and not args.video.is_file():
        sys.exit(f"benchmarks/long_video.py: --video {args.video}: no such file")

    from recot.engine import resolve_cache_dir
    from recot.engine.default_model import untrained_model_dir

    started = time.perf_counter()
    video = args.video or make_video(resolve_cache_dir() / "bench" / "long_video_300s_30fps_160x120.mp4")
    model_dir = untrained_model_dir("small")
    rows = []
    for n in args.frames:
        for mode in args.modes:
            row = run_child(mode, n, video, model_dir)
            rows.append(row)
            print(f"{mode:>8} {n:>5} frames: encode peak RSS {row['encode_peak_rss'] / 2**20:7.0f} MiB, encode {row['encode_s']:6.1f} s", flush=True)
    write_report(rows, video, args.name, args.out, time.perf_counter() - started)


if __name__ == "__main__":
    main()
