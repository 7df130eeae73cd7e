"""Frame sampling speed and peak memory on a long video: recot.video (PyAV or torchcodec) vs naive vs decord.

Generates (once, cached) an H.264 test video, then for each frame count and
method runs one fresh subprocess that samples ``linspace(0, total-1, N)`` frames
at full resolution and reports wall time and peak RSS. ``recot`` is our sampler
with the PyAV backend, ``torchcodec`` the same sampler with the torchcodec
backend (skipped when torchcodec does not load). Our sampler and the
naive pass hand frames to the caller and drop them (streaming consumer);
decord's ``get_batch`` returns them all at once, as the released model uses it.

    python benchmarks/decode.py                      # 1 h 1280x720 30 fps, GOP 250
    python benchmarks/decode.py --minutes 5 --counts 128 1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np

RESULTS = Path(__file__).parent / "results"
METHODS = ("recot", "torchcodec", "naive", "decord")


def generate(path: Path, minutes: float, width: int, height: int, fps: int, gop: int) -> None:
    """Encode a synthetic video: a slowly drifting gradient with a moving block (moderate bitrate)."""
    n = int(minutes * 60 * fps)
    tmp = path.with_suffix(".partial.mp4")
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 255 // (width + height))], -1).astype(np.uint8)
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i in range(n):
            img = np.roll(base, i % width, axis=1)
            bx, by = (i * 7) % (width - 64), (i * 3) % (height - 64)
            img[by : by + 64, bx : bx + 64] = 255 - (i % 256)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
            if i % (fps * 600) == 0:
                print(f"  generating: {i / fps / 60:.0f} of {minutes:g} min", file=sys.stderr, flush=True)
        out.mux(stream.encode())
    tmp.rename(path)


def worker(method: str, path: str, count: int) -> dict:
    """Sample ``count`` frames with ``method`` in this process; returns seconds, peak RSS and a checksum.

    Imports happen before the clock starts (importing recot pulls in torch), and the
    RSS after imports is reported so the table can show what decoding itself adds.
    """
    if method in ("recot", "torchcodec"):
        from recot.video import iter_frames, plan_frames, probe
        from recot.video.decode import decoded_frame_count, plan_runs
    elif method == "decord":
        import decord
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    checksum = 0
    if method in ("recot", "torchcodec"):
        plan = plan_frames(probe(path), num_frames=count)
        backend = "pyav" if method == "recot" else "torchcodec"
        for batch in iter_frames(path, plan, batch_size=32, backend=backend):
            checksum += int(batch.frames[:, ::97, ::97].sum())
        extra = {}
        if method == "recot":
            runs = plan_runs(plan.info, np.unique(plan.indices))
            extra["decoded_upper_bound"] = decoded_frame_count(plan.info, runs)
    elif method == "naive":
        with av.open(path) as c:
            stream = c.streams.video[0]
            stream.thread_type = "AUTO"
            total = stream.frames
            wanted = np.floor(np.linspace(0, total - 1, count)).astype(int)
            repeats = dict(zip(*np.unique(wanted, return_counts=True), strict=False))
            for i, frame in enumerate(c.decode(stream)):
                if i in repeats:
                    checksum += int(frame.to_ndarray(format="rgb24")[::97, ::97].sum()) * int(repeats[i])
        extra = {}
    else:
        vr = decord.VideoReader(path, ctx=decord.cpu(0))
        wanted = np.floor(np.linspace(0, len(vr) - 1, count)).astype(int)
        frames = vr.get_batch(list(wanted)).asnumpy()
        checksum = int(frames[:, ::97, ::97].sum())
        extra = {}
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "frames": count, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb),
            "import_rss_mb": round(base_mb), "checksum": checksum, **extra}


def torchcodec_available() -> bool:
    from recot.video.backends import torchcodec_available as available

    return available()


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def available_memory_bytes() -> int:
    import psutil

    return psutil.virtual_memory().available


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=250)
    parser.add_argument("--counts", type=int, nargs="+", default=[128, 1024, 4096, 8192])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "recot-bench")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "PATH", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], int(args.worker[2]))))
        return 0

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    video = args.cache_dir / f"long_{args.minutes:g}min_{args.width}x{args.height}_{args.fps}fps_gop{args.gop}.mp4"
    if not video.exists():
        print(f"generating {video} (once; cached)", file=sys.stderr)
        generate(video, args.minutes, args.width, args.height, args.fps, args.gop)

    rows = []
    frame_bytes = args.width * args.height * 3
    for count in args.counts:
        for method in args.methods:
            row = {"method": method, "frames": count}
            if method == "torchcodec" and not torchcodec_available():
                row["skipped"] = "torchcodec does not load"
            elif method == "decord" and not decord_available():
                row["skipped"] = "decord is not installed"
            elif method == "decord" and 2 * count * frame_bytes > 0.8 * available_memory_bytes():
                # get_batch holds every frame (plus decord's own copies): it would swap or be OOM-killed.
                row["skipped"] = f"needs > {2 * count * frame_bytes / 2**30:.0f} GB RAM"
            else:
                cmd = [sys.executable, __file__, "--worker", method, str(video), str(count)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if done.returncode:
                    row["skipped"] = f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
                else:
                    row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)

    RESULTS.mkdir(exist_ok=True)
    meta = {"video": video.name, "minutes": args.minutes, "size": f"{args.width}x{args.height}", "fps": args.fps,
            "gop": args.gop, "cpus": os.cpu_count()}
    (RESULTS / "decode.json").write_text(json.dumps({"video": meta, "results": rows}, indent=2) + "\n")
    table = markdown_table(rows, args.methods, args.counts)
    command = "python benchmarks/decode.py " + " ".join(sys.argv[1:])
    (RESULTS / "decode.md").write_text(
        f"Sampling N frames (`linspace`, full resolution RGB) from a {args.minutes:g} min {args.width}x{args.height} "
        f"{args.fps} fps H.264 video (GOP {args.gop}) on {os.cpu_count()} CPU cores: wall time, peak RSS "
        f"and, in brackets, the RSS added after imports (importing recot loads torch).\n\n"
        f"{table}\n\nReproduce: `{command.strip()}`\n"
    )
    print(table)
    return 0


def markdown_table(rows: list[dict], methods: list[str], counts: list[int]) -> str:
    """Frames down, methods across; each cell 'seconds / peak RSS (+ RSS added after imports)'."""
    cell = {(r["method"], r["frames"]): r for r in rows}
    lines = ["| frames | " + " | ".join(methods) + " |", "|---:|" + "---:|" * len(methods)]
    for count in counts:
        cells = []
        for method in methods:
            r = cell[(method, count)]
            added = r.get("peak_rss_mb", 0) - r.get("import_rss_mb", 0)
            cells.append(r["skipped"] if "skipped" in r else f"{r['seconds']:.1f} s / {r['peak_rss_mb']} MB (+{added})")
        lines.append(f"| {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
