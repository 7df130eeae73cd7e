"""Load test of ``recot serve``: N concurrent clients on 127.0.0.1, latency percentiles, throughput, peak RSS.

For each client count (default 4 and 32), a fresh server process (``recot serve``
on a free loopback port; the untrained ``small`` preset on CPU unless ``--model``)
with an empty cache, one video uploaded and encoded beforehand (the "cached"
video), then four phases:

1. ``unloaded``: one client asks about the cached video, one question after another;
2. ``questions``: N clients do the same at once, for ``--duration`` seconds;
3. ``mixed``: N clients for ``--duration`` seconds; each request is, with probability
   ``--upload-share``, the upload of a new video (a generated clip sampled at a random
   number of frames, so it is a real encode), else a question about the cached video;
4. ``long encode``: an hour-long video (3,600 frames at 1 fps) is uploaded and, while it
   is being encoded, N clients ask about the cached video (until the encode ends or
   ``--duration`` seconds pass).

Questions alternate between plain and streamed (SSE, timed to ``[DONE]``), 16 new
tokens each. A 429 (queue full) is counted apart: it is the server's intended
answer to overload. Anything else that is not a 200 is an error. Peak RSS is the
server process's high-water mark (``VmHWM``) after all phases. The server runs
torch ops on one CPU thread each (``--server-threads``): on a machine whose cores
other work also uses, ops split over two threads wait for each other, and a
question took 1-3 s instead of 0.2 s here.

Goals (issue 14): no errors besides 429s; peak RSS at 32 clients <= 1.2x at 4; p95
of cached questions during the long encode < 3x their p95 without it (same clients).

    python benchmarks/serve_load.py                              # 4 and 32 clients, 20 s phases
    python benchmarks/serve_load.py --clients 4 8 16 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
HOST = "127.0.0.1"  # loopback only: this is a load generator
MAX_CLIENTS = 64
MAX_DURATION = 300.0
QUESTION = "What happens in this video?"
NEW_TOKENS = 16


def check_dependencies() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "httpx", "psutil", "python_multipart", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        sys.exit(f"serve_load.py needs {', '.join(missing)}: pip install -e '.[serve,bench]'")


# ----- videos ------------------------------------------------------------------------------------------------
def make_videos(folder: Path, clips: int) -> tuple[Path, list[Path], Path]:
    """The cached video, ``clips`` distinct short clips for uploads, and an hour-long video (written once)."""
    from recot.data.sample_video import write_sample_video

    folder.mkdir(parents=True, exist_ok=True)

    def once(name: str, **kwargs) -> Path:
        path = folder / name
        if not path.is_file():
            write_sample_video(path, progress=False, **kwargs)
        return path

    cached = once("cached_60s.mp4", duration=60, fps=2, size=(160, 120), needle_at=30)
    uploads = [once(f"clip_{i:02d}.mp4", duration=20, fps=2, size=(160, 120), needle_at=1 + i) for i in range(clips)]
    hour = once("hour_3600s_1fps.mp4", duration=3600, fps=1, size=(160, 120))
    return cached, uploads, hour


# ----- the server ------------------------------------------------------------------------------------------------
class Server:
    """``recot serve`` in a child process on a free loopback port."""

    def __init__(self, model: Path, workdir: Path, max_queue: int, max_encode_queue: int, threads: int) -> None:
        argv = [
            sys.executable, "-m", "recot.cli", "serve", "--model", str(model), "--host", HOST, "--port", "0",
            "--cache-dir", str(workdir / "cache"), "--upload-dir", str(workdir / "uploads"),
            "--max-queue", str(max_queue), "--max-encode-queue", str(max_encode_queue), "--max-frames", "4096",
            "--log-level", "warning",
        ]  # fmt: skip
        self.log = open(workdir / "server.log", "w+")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=self.log, text=True, env=env)
        deadline = time.monotonic() + 180
        line = ""
        while "http://" not in line:
            line = self.process.stderr.readline()
            if (not line and self.process.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {line}")
        self.url = re.search(r"(http://\S+:\d+)", line).group(1)
        # Keep reading its stderr into the log, so a full pipe never blocks the server.
        threading.Thread(target=lambda: self.log.writelines(self.process.stderr), daemon=True).start()

    def peak_rss(self) -> int:
        """The process's high-water mark of resident memory, in bytes."""
        status = Path(f"/proc/{self.process.pid}/status")
        if status.is_file():
            match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
            if match:
                return int(match.group(1)) * 1024
        import psutil

        return psutil.Process(self.process.pid).memory_info().rss  # not a peak: a lower bound

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ----- clients -------------------------------------------------------------------------------------------------
class Tally:
    """Latencies of successful requests by kind, 429s and errors."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = {"question": [], "upload": []}
        self.rejected = 0
        self.errors: list[str] = []

    def summary(self, seconds: float) -> dict:
        out: dict = {"seconds": round(seconds, 2), "rejected_429": self.rejected, "errors": len(self.errors)}
        out["error_samples"] = sorted(set(self.errors))[:5]
        done = sum(len(v) for v in self.latency.values())
        out["requests_per_s"] = round(done / seconds, 2) if seconds else 0.0
        for kind, values in self.latency.items():
            if values:
                out[kind] = {"count": len(values), **percentiles(values)}
        return out


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "mean": round(statistics.fmean(ordered), 4)}


def question_body(model: str, video_id: str, stream: bool) -> dict:
    content = [
        {"type": "video_url", "video_url": {"url": f"recot-video://{video_id}"}},
        {"type": "text", "text": QUESTION},
    ]
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": NEW_TOKENS,
        "stream": stream,
    }


async def ask(client, model: str, video_id: str, stream: bool, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        if stream:
            async with client.stream("POST", "/v1/chat/completions", json=question_body(model, video_id, True)) as r:
                if r.status_code == 200:
                    last = ""
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            last = line
                    status = 200 if last == "data: [DONE]" else -1
                else:
                    await r.aread()
                    status = r.status_code
        else:
            r = await client.post("/v1/chat/completions", json=question_body(model, video_id, False))
            status = r.status_code
    except Exception as exc:  # noqa: BLE001 - a load test counts every failure
        tally.errors.append(f"question: {type(exc).__name__}")
        return
    record(tally, "question", status, time.perf_counter() - started)


async def upload(client, clip: Path, frames: int, tally: Tally) -> str | None:
    started = time.perf_counter()
    try:
        r = await client.post("/v1/videos", files={"file": (clip.name, clip.read_bytes(), "video/mp4")},
                              data={"frames": str(frames)})  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        tally.errors.append(f"upload: {type(exc).__name__}")
        return None
    record(tally, "upload", r.status_code, time.perf_counter() - started)
    return r.json()["id"] if r.status_code == 200 else None


def record(tally: Tally, kind: str, status: int, seconds: float) -> None:
    if status == 200:
        tally.latency[kind].append(seconds)
    elif status == 429:
        tally.rejected += 1
    else:
        tally.errors.append(f"{kind}: HTTP {status}")


async def wait_status(client, video_id: str, wanted: tuple[str, ...], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = (await client.get(f"/v1/videos/{video_id}")).json()
        if found["status"] in wanted or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.1)


async def run_clients(n: int, until, body) -> float:
    """``n`` clients each running ``body(i)`` repeatedly until ``until()``; returns the seconds taken."""
    started = time.perf_counter()

    async def loop(i: int) -> None:
        k = 0
        while not until():
            await body(i, k)
            k += 1

    await asyncio.gather(*(loop(i) for i in range(n)))
    return time.perf_counter() - started


async def measure(server: Server, clients: int, duration: float, upload_share: float, videos, seed: int) -> dict:
    import httpx

    cached_video, clips, hour = videos
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        warm = Tally()
        video_id = await upload(client, cached_video, 64, warm)
        assert video_id and (await wait_status(client, video_id, ("ready", "failed"), 300))["status"] == "ready"
        await ask(client, model, video_id, False, warm)
        phases: dict = {}

        def timed(seconds: float):
            end = time.monotonic() + seconds
            return lambda: time.monotonic() >= end

        tally = Tally()
        done = timed(min(duration, 10.0))
        seconds = await run_clients(1, done, lambda i, k: ask(client, model, video_id, k % 2 == 1, tally))
        phases["unloaded"] = tally.summary(seconds)

        tally = Tally()
        seconds = await run_clients(
            clients, timed(duration), lambda i, k: ask(client, model, video_id, (i + k) % 2 == 1, tally)
        )
        phases["questions"] = tally.summary(seconds)

        tally = Tally()

        async def mixed(i: int, k: int) -> None:
            if rng.random() < upload_share:
                await upload(client, rng.choice(clips), rng.randint(8, 48), tally)
            else:
                await ask(client, model, video_id, (i + k) % 2 == 1, tally)

        seconds = await run_clients(clients, timed(duration), mixed)
        phases["mixed"] = tally.summary(seconds)
        # Let the uploads of the mixed phase finish encoding, so the long encode runs alone.
        while (await client.get("/health")).json()["queue"]["encode"]:
            await asyncio.sleep(0.2)

        tally = Tally()
        hour_id = await upload(client, hour, 3600, tally)
        assert hour_id, f"the hour-long video was not accepted: {tally.errors or 'queue full'}"
        await wait_status(client, hour_id, ("encoding", "ready", "failed"), 120)
        encode_started = time.monotonic()
        end = encode_started + duration

        def encode_over() -> bool:
            return time.monotonic() >= end or encode_over.ready

        encode_over.ready = False

        async def watch() -> None:
            while not encode_over():
                encode_over.ready = (await client.get(f"/v1/videos/{hour_id}")).json()["status"] in ("ready", "failed")
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch())
        seconds = await run_clients(
            clients, encode_over, lambda i, k: ask(client, model, video_id, (i + k) % 2 == 1, tally)
        )
        await watcher
        during = (await client.get(f"/v1/videos/{hour_id}")).json()
        phase = tally.summary(seconds)
        phase["encode_progress_at_end"] = during["progress"]
        finished = await wait_status(client, hour_id, ("ready", "failed"), 900)
        phase["encode_status"] = finished["status"]
        phase["encode_seconds"] = finished.get("encode_seconds")
        phases["long_encode"] = phase
        metrics = (await client.get("/metrics")).text
    fps = re.search(r"^recot_encode_frames_per_second (\S+)", metrics, re.M)
    return {"clients": clients, "phases": phases, "peak_rss": server.peak_rss(),
            "last_encode_frames_per_s": float(fps.group(1)) if fps else None}  # fmt: skip


# ----- report ----------------------------------------------------------------------------------------------------
def write_report(rows: list[dict], meta: dict, name: str) -> None:
    from recot.data.atomic import atomic_write_text

    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{name}.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    mib = 2**20
    lines = [
        "# recot serve under load",
        "",
        f"{meta['model']}, {meta['server_threads']} thread(s) per op; {meta['machine']}; phases of "
        f"{meta['duration']:g} s; questions: {NEW_TOKENS} new tokens, "
        "half of them streamed. Latencies in seconds (uploads: until the server accepted the file; encoding goes on "
        "in the background). 429 = refused because a queue was full (intended); errors = anything else. "
        f"Load average (1, 5, 15 min) before: {meta['load_average_before']}, after: {meta['load_average_after']} "
        "(other work on the machine shares its CPUs).",
        "",
        "| clients | phase | questions p50 / p95 / p99 | uploads p50 / p95 | req/s | 429 | errors |",
        "|---:|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        for phase_name, phase in row["phases"].items():
            q, u = phase.get("question"), phase.get("upload")
            qs = f"{q['p50']:.3f} / {q['p95']:.3f} / {q['p99']:.3f}" if q else "-"
            us = f"{u['p50']:.3f} / {u['p95']:.3f}" if u else "-"
            clients = 1 if phase_name == "unloaded" else row["clients"]
            lines.append(f"| {clients} | {phase_name.replace('_', ' ')} | {qs} | {us} | {phase['requests_per_s']:.1f} "
                         f"| {phase['rejected_429']} | {phase['errors']} |")  # fmt: skip
    lines += [
        "",
        "| clients | server peak RSS (MiB) | long encode: p95 during / p95 without | encode progress at its end |",
        "|---:|---:|---:|---:|",
    ]
    for row in rows:
        during, without = row["phases"]["long_encode"].get("question"), row["phases"]["questions"].get("question")
        ratio = f"{during['p95'] / without['p95']:.2f}x" if during and without else "-"
        progress = row["phases"]["long_encode"]["encode_progress_at_end"]
        lines.append(f"| {row['clients']} | {row['peak_rss'] / mib:.0f} | {ratio} | {progress:.0%} |")
    if len(rows) > 1:
        lo, hi = rows[0], rows[-1]
        errors = sum(p["errors"] for r in rows for p in r["phases"].values())
        lines += [
            "",
            f"Peak RSS at {hi['clients']} clients / at {lo['clients']}: **{hi['peak_rss'] / lo['peak_rss']:.2f}x** "
            f"(goal <= 1.2x). Errors other than 429: **{errors}** (goal 0).",
        ]
    command = " ".join(["python benchmarks/serve_load.py", *sys.argv[1:]])
    lines += ["", f"Reproduce: `{command}`.", ""]
    atomic_write_text(RESULTS / f"{name}.md", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[4, 32], help=f"client counts (each <= {MAX_CLIENTS})"
    )
    parser.add_argument("--duration", type=float, default=20.0, help=f"seconds per phase (<= {MAX_DURATION:g})")
    parser.add_argument("--upload-share", type=float, default=0.2, help="share of requests that upload a new video")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: the untrained small preset)")
    parser.add_argument("--max-queue", type=int, default=64, help="the server's --max-queue")
    parser.add_argument("--max-encode-queue", type=int, default=8, help="the server's --max-encode-queue")
    parser.add_argument(
        "--server-threads", type=int, default=1,
        help="CPU threads per torch op in the server (OMP_NUM_THREADS; 0: torch's default). One by default: on a "
        "shared machine, ops split over busy cores wait for each other (see the results' notes)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="serve_load", help="results file name under benchmarks/results/")
    args = parser.parse_args()
    if not all(1 <= n <= MAX_CLIENTS for n in args.clients):
        parser.error(f"--clients must be between 1 and {MAX_CLIENTS}")
    if not 1 <= args.duration <= MAX_DURATION:
        parser.error(f"--duration must be between 1 and {MAX_DURATION:g} seconds")
    check_dependencies()

    from recot.engine import resolve_cache_dir
    from recot.engine.default_model import untrained_model_dir

    load_before = os.getloadavg()
    model = args.model or untrained_model_dir("small")
    videos = make_videos(resolve_cache_dir() / "bench" / "serve_load", clips=16)
    rows = []
    for clients in args.clients:
        with tempfile.TemporaryDirectory(prefix="recot-serve-load-") as workdir:
            server = Server(model, Path(workdir), args.max_queue, args.max_encode_queue, args.server_threads)
            try:
                row = asyncio.run(measure(server, clients, args.duration, args.upload_share, videos, args.seed))
            finally:
                server.stop()
        rows.append(row)
        q = row["phases"]["questions"].get("question", {})
        print(f"{clients:>3} clients: questions p95 {q.get('p95', float('nan')):.3f} s, "
              f"peak RSS {row['peak_rss'] / 2**20:.0f} MiB", flush=True)  # fmt: skip
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    meta = {
        "machine": f"{platform.machine()}, {cpus} CPUs", "python": platform.python_version(),
        "model": "untrained small preset, float32, CPU" if args.model is None else str(args.model),
        "duration": args.duration, "upload_share": args.upload_share, "new_tokens": NEW_TOKENS,
        "server_threads": args.server_threads or "torch default",
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
    }  # fmt: skip
    write_report(rows, meta, args.name)


if __name__ == "__main__":
    main()
