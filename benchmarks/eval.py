"""Wall time and peak memory of ``recot eval`` on a 20-question fixture: first run against cached reruns.

The fixture is an MLVU dev file in lmms-eval's layout: 5 generated videos
(20 minutes each at 1 fps, 160x120, the sample-video generator with its red
disc at a different time in each) with 4 questions each. The model is the untrained
``small`` preset (weights do not change the cost); sampling is ``recot eval``'s
default, one frame a second (1,200 frames a video). Each run is the
``recot eval`` command in a fresh process (imports and model loading
included), in this order:

1. ``first``: empty encode cache, new run folder: every video decoded and
   encoded, every question answered;
2. ``same command``: the identical command again: the run folder already holds
   every answer, so it resumes with nothing to do (the issue's "second run");
3. ``new run folder``: the same evaluation into another folder with the encode
   cache warm: no video is encoded, every question is answered again.

Peak RSS is the child's ``ru_maxrss``. Writes ``benchmarks/results/eval.json``
and ``eval.md`` (atomically) and prints the table.

    python benchmarks/eval.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
VIDEOS, QUESTIONS_PER_VIDEO, MINUTES = 5, 4, 20
GOAL = 5.0


def check_dependencies() -> None:
    """Fail early, naming what is missing."""
    try:
        import recot.eval.commands  # noqa: F401
    except ImportError as exc:
        sys.exit(f"benchmarks/eval.py needs recot with its eval package importable: {exc}")


def make_fixture(root: Path) -> Path:
    """5 videos x 4 questions in lmms-eval's MLVU layout; returns the annotation file."""
    from recot.data.sample_video import write_sample_video

    rows = []
    for v in range(VIDEOS):
        # Distinct videos (the encode cache is keyed by content): the red disc shows at a different time in each.
        write_sample_video(root / f"plotQA_{v}.mp4", duration=MINUTES * 60.0, needle_at=100.0 + 200 * v, progress=False)
        for q in range(QUESTIONS_PER_VIDEO):
            question = f"What happens in part {q + 1} of video {v}?\n(A) rain\n(B) sunset\n(C) a race\n(D) nothing"
            rows.append({"video_name": f"plotQA_{v}.mp4", "question": question, "answer": "ABCD"[(v + q) % 4],
                         "task_type": "plotQA", "question_id": f"bench-{v}-{q}"})  # fmt: skip
    (root / "mlvu_dev.json").write_text(json.dumps(rows))
    return root / "mlvu_dev.json"


def worker(argv: list[str]) -> None:
    """Run ``recot eval`` in this process; print its exit code and peak RSS as JSON on the last line."""
    from recot.cli import main

    code = main(argv)
    print(json.dumps({"code": code, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


def run_child(argv: list[str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--worker", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"recot eval failed:\n{proc.stderr[-3000:]}")
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    if record["code"] != 0:
        sys.exit(f"recot eval exited {record['code']}:\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, "peak_rss": record["peak_rss"]}


def write_report(rows: list[dict], meta: dict) -> str:
    from recot.data.atomic import atomic_write_text

    first = rows[0]["wall_s"]
    lines = [
        "| run | wall (s) | peak RSS (MiB) | speed-up vs first | answered | videos encoded |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['run']} | {row['wall_s']:.1f} | {row['peak_rss'] / 2**20:.0f} | "
                     f"{first / row['wall_s']:.1f}x | {row['answered']} | {row['encoded']} |")  # fmt: skip
    table = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    atomic_write_text(RESULTS / "eval.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    atomic_write_text(RESULTS / "eval.md", f"# recot eval: first run vs cached reruns\n\n{table}\n")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    check_dependencies()
    with tempfile.TemporaryDirectory(prefix="recot-eval-bench-") as tmp:
        root = Path(tmp)
        data = make_fixture(root / "data")
        cache = root / "cache"
        from recot.engine.default_model import untrained_model_dir

        model = untrained_model_dir("small", cache)  # built before timing: a first use of recot does this once

        def command(output: Path) -> list[str]:
            return ["eval", "mlvu-dev", "--data", str(data), "--model", str(model), "--output", str(output),
                    "--cache-dir", str(cache), "--no-progress"]  # fmt: skip

        load_before = os.getloadavg()
        rows = []
        for name, output in (
            ("first", root / "run"),
            ("same command", root / "run"),
            ("new run folder", root / "run2"),
        ):
            row = {"run": name, **run_child(command(output))}
            summary = (output / "summary.md").read_text()
            this_run = next(line for line in summary.splitlines() if line.startswith("- this run:"))
            row["answered"] = int(this_run.split("questions answered")[0].split()[-1])
            row["encoded"] = int(this_run.split("videos encoded")[0].split(",")[-1])
            rows.append(row)
            print(f"{name:>15}: {row['wall_s']:6.1f} s, peak RSS {row['peak_rss'] / 2**20:5.0f} MiB", flush=True)
        results = json.loads((root / "run" / "results.json").read_text())
        shutil.rmtree(root / "run" / "work", ignore_errors=True)
    meta = {
        "fixture": f"{VIDEOS} videos x {QUESTIONS_PER_VIDEO} questions, {MINUTES} min at 1 fps, 160x120",
        "sampling": results["config"]["sampling"],
        "model": "untrained small preset, float32, CPU",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "goal": f"second run of the same command >= {GOAL:g}x faster than the first",
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
    }
    table = write_report(rows, meta)
    print(table)
    speedup = rows[0]["wall_s"] / rows[1]["wall_s"]
    print(f"same command rerun: {speedup:.1f}x faster (goal >= {GOAL:g}x): {'met' if speedup >= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
