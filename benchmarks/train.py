"""Training throughput and memory vs frames per sample, and pruning measured on a synthetic QA set.

Part ``throughput``: for each frame count (default 16, 32, 64, 128, 256) and
gradient checkpointing on/off, a fresh process runs ``recot.train.train`` (stage
``sft``: LLM, compressor, selector and projector learn; vision tower frozen) on
the ``small`` preset, CPU, float32, one sample per forward, batch 2, a few
steps; every step decodes its videos (no feature cache). Reported: samples/s and
LLM tokens/s over the steps after the first, and the process's peak RSS (and its
growth over the loaded model).

Part ``pruning``: a synthetic conversation set with a known redundant share
(re-encoded duplicate videos asked the same question, still videos,
questions that a text-only LLM already answers) goes through ``recot prune-data``
with a model whose LLM was first taught the "facts" (text-only ``recot train``).
Reported: the share of each kind of redundant sample removed, and of useful samples removed.

    python benchmarks/train.py                        # both parts; writes benchmarks/results/train.{json,md}
    python benchmarks/train.py --part throughput --frames 16 64   # re-measure some rows, keep the others
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
#: Threads per process: one, because this project's 2-core machine is shared (two threads spin against each other).
THREADS = 1
SRC = Path(__file__).resolve().parents[1] / "src"


def check_dependencies() -> None:
    missing = [m for m in ("av", "peft", "accelerate", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"benchmarks/train.py needs {', '.join(missing)}: pip install -e '.[train,bench]'")


# ----- synthetic media ---------------------------------------------------------------
def write_moving_video(
    path: Path, seed: int, num_frames: int, fps: int = 8, size: int = 64, crf: int | None = None, speed: float = 3.0
) -> Path:
    """A square of a random colour moving along a random path over a random background (every video differs).

    ``speed`` bounds the square's pixels per frame; below 1 there is no sweeping shadow (a slow, quiet clip).
    """
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    background = rng.integers(0, 256, 3)
    colour = rng.integers(0, 256, 3)
    start, velocity = rng.uniform(0, size - 16, 2), rng.uniform(-speed, speed, 2)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"} | ({"crf": str(crf)} if crf is not None else {})
        for i in range(num_frames):
            frame = np.zeros((size, size, 3), np.uint8) + background.astype(np.uint8)
            x, y = (np.abs((start + velocity * i) % (2 * (size - 16)) - (size - 16))).astype(int)
            frame[y : y + 16, x : x + 16] = colour
            if speed >= 1:
                frame[:, : 4 + (i * 3) % (size - 4)] //= 2  # a sweeping shadow: the content changes every frame
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def write_still_video(path: Path, seed: int, num_frames: int, fps: int = 8, size: int = 64) -> Path:
    import av
    import numpy as np

    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (size // 8, size // 8, 3)).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for _ in range(num_frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def conversation(question: str, answer: str, video: str | None = None) -> dict:
    row = {"conversations": [{"from": "human", "value": (f"<image>\n{question}" if video else question)},
                             {"from": "gpt", "value": answer}]}  # fmt: skip
    if video:
        row["video"] = video
    return row


# ----- throughput ------------------------------------------------------------------
def throughput_worker(frames: int, checkpointing: bool, root: str) -> dict:
    """One measurement in its own process."""
    import psutil
    import torch

    from recot.train.config import TrainConfig
    from recot.train.trainer import train

    torch.set_num_threads(THREADS)
    work = Path(root)
    cfg = TrainConfig.model_validate({
        "stage": "sft", "output_dir": str(work / f"run_{frames}_{int(checkpointing)}"), "checkpoint_every": 1000,
        "gradient_checkpointing": checkpointing, "model": {"preset": "small"},
        "data": {"train": [str(work / "bench.json")], "media_root": str(work), "fps": 8, "max_frames": frames},
        "optim": {"steps": 3, "batch_size": 2, "warmup_steps": 1, "lr": {"language_model": 1e-4}},
    })  # fmt: skip
    rss_start = psutil.Process().memory_info().rss
    rows = train(cfg, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    timed = rows[1:]
    seconds = sum(r["seconds"] for r in timed)
    return {
        "frames": frames,
        "gradient_checkpointing": checkpointing,
        "samples_per_s": sum(2 for _ in timed) / seconds,
        "llm_tokens_per_s": sum(r["llm_tokens"] for r in timed) / seconds,
        "llm_tokens_per_sample": timed[0]["llm_tokens"] / 2,
        "seconds_per_step": seconds / len(timed),
        "peak_rss_mib": peak / 2**20,
        "rss_before_mib": rss_start / 2**20,
        "loss": rows[-1]["loss"],
    }


def run_throughput(frame_counts: list[int], work: Path) -> list[dict]:
    longest = max(frame_counts)
    # Two 256-frame videos at 8 fps; every sample samples 8 fps capped at max_frames.
    rows = [dict(conversation("What moves, and where does it go?", f"a square, to the {side}", f"m{i}.mp4"), id=f"m{i}")
            for i, side in enumerate(["left", "right"])]  # fmt: skip
    for i in range(2):
        write_moving_video(work / f"m{i}.mp4", seed=i, num_frames=longest, size=112)
    (work / "bench.json").write_text(json.dumps(rows))
    results = []
    for frames in frame_counts:
        for checkpointing in (True, False):
            cmd = [sys.executable, __file__, "--worker", str(frames), str(int(checkpointing)), str(work)]
            done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
            if done.returncode:
                sys.exit(f"worker failed ({frames} frames): {done.stderr[-2000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


# ----- pruning ---------------------------------------------------------------------------
FACTS = [("What is the capital of Zorbia?", "Plimton"), ("Which river crosses Quellin?", "the Varro"),
         ("What do blorfs eat?", "copper leaves"), ("Who wrote the Tale of Ormu?", "Ilse Danner"),
         ("What colour is a ripe tangal fruit?", "violet"), ("How many moons has Pexa?", "seven"),
         ("What is the national sport of Drell?", "sand polo"), ("Which metal is Kestrine made of?", "tin"),
         ("What language is spoken in Umbor?", "Umbric"), ("When did the Frost Fair start?", "in 1608")]  # fmt: skip
VIDEO_QUESTIONS = ["What moves in the video?", "Where does the square go?", "What colour is the background?",
                   "How fast does it move?"]  # fmt: skip


def build_pruning_set(
    work: Path, useful: int = 30, per_kind: int = 6, seed: int = 0
) -> tuple[Path, dict[str, str], dict[str, str]]:
    """The synthetic set: ``useful`` distinct samples, ``per_kind`` duplicates, still videos and text-answerable ones.

    Useful samples that look redundant but are not are included: ``per_kind`` ask a second, different question
    about a useful sample's video, ``per_kind`` have slow motion without the shadow (little change, but some).

    Returns the file, the kind of each row id, and for each duplicate the id of the row it copies.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    media = work / "media"
    media.mkdir(parents=True, exist_ok=True)
    rows, kinds, copies = [], {}, {}

    def add(kind: str, row: dict) -> None:
        row["id"] = f"s{len(rows):02d}"
        kinds[row["id"]] = kind
        rows.append(row)

    for i in range(useful):
        write_moving_video(media / f"u{i}.mp4", seed=100 + i, num_frames=32)
        answer = f"{rng.choice(['a', 'one', 'the'])} {rng.choice(['red', 'blue', 'pale', 'dark'])} {rng.choice(['square', 'block', 'tile'])} {i}"
        add("useful", conversation(VIDEO_QUESTIONS[i % 4], answer, f"u{i}.mp4"))
    for k in range(per_kind):  # another question about a video already in the set: a new lesson
        i = k * (useful // per_kind) + 1
        add(
            "useful: 2nd question",
            conversation(VIDEO_QUESTIONS[(i + 2) % 4], f"answer {k} about clip {i}", f"u{i}.mp4"),
        )
    for k in range(per_kind):  # slow, quiet clips: low change, still a video
        write_moving_video(media / f"slow{k}.mp4", seed=400 + k, num_frames=32, speed=0.7)
        add("useful: slow motion", conversation(VIDEO_QUESTIONS[k % 4], f"a slow square {k}", f"slow{k}.mp4"))
    for k in range(per_kind):  # the same video re-encoded at another quality, asked the same question
        i = k * (useful // per_kind)
        write_moving_video(media / f"dup{k}.mp4", seed=100 + i, num_frames=32, crf=30)
        add("duplicate", conversation(rows[i]["conversations"][0]["value"].split("\n", 1)[1],
                                      rows[i]["conversations"][1]["value"], f"dup{k}.mp4"))  # fmt: skip
        copies[rows[-1]["id"]] = rows[i]["id"]
    for k in range(per_kind):
        write_still_video(media / f"still{k}.mp4", seed=200 + k, num_frames=32)
        add("static", conversation(VIDEO_QUESTIONS[k % 4], f"a still scene {k}", f"still{k}.mp4"))
    for k in range(per_kind):
        write_moving_video(media / f"t{k}.mp4", seed=300 + k, num_frames=32)
        question, answer = FACTS[k]
        add("text-answerable", conversation(question, answer, f"t{k}.mp4"))
    order = rng.permutation(len(rows))
    path = work / "qa.json"
    path.write_text(json.dumps([rows[i] for i in order], indent=1))
    return path, kinds, copies


def teach_facts(work: Path) -> Path:
    """The small preset whose LLM learned the facts (text-only rows): the 'world knowledge' a real LLM has."""
    from recot.train.config import TrainConfig
    from recot.train.trainer import train

    facts = work / "facts.json"
    facts.write_text(json.dumps([conversation(q, a) for q, a in FACTS]))
    cfg = TrainConfig.model_validate({
        "stage": "sft", "output_dir": str(work / "facts_run"), "checkpoint_every": 1000, "model": {"preset": "small"},
        "data": {"train": [str(facts)]}, "trainable": ["language_model"],
        "optim": {"steps": 150, "batch_size": 10, "micro_batch_size": 10, "warmup_steps": 10, "lr": {"language_model": 3e-3}},
    })  # fmt: skip
    rows = train(cfg, progress=False)
    print(f"facts taught: loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}")
    return work / "facts_run" / "model"


def run_pruning(work: Path) -> dict:
    import torch

    from recot.train.prune import PruneOptions, prune_file

    torch.set_num_threads(THREADS)
    data, kinds, copies = build_pruning_set(work)
    model = teach_facts(work)
    started = time.perf_counter()
    summary = prune_file(data, work / "kept.json", work / "report.md", PruneOptions(fps=8, max_frames=32, progress=True),
                         media_root=work / "media", model_dir=model, cache_dir=work / "cache")  # fmt: skip
    seconds = time.perf_counter() - started
    print(summary)
    decisions = [json.loads(line) for line in (work / "kept.decisions.jsonl").read_text().splitlines()]
    kept = {d["id"]: d["kept"] for d in decisions}
    # A duplicate pair is one redundant sample: removing either copy (the pruner keeps the first in file
    # order) removes the redundancy, and the content survives in the other copy.
    redundant_of_pair = {}
    for copy, original in copies.items():
        redundant_of_pair[copy] = original if kept[copy] and not kept[original] else copy
    by_kind: dict[str, dict[str, int]] = {}
    for d in decisions:
        kind = kinds[d["id"]]
        if d["id"] in copies.values():
            continue  # an original of a duplicate pair: counted with its pair
        k = by_kind.setdefault(kind, {"total": 0, "removed": 0})
        k["total"] += 1
        k["removed"] += int(not kept[redundant_of_pair.get(d["id"], d["id"])])
    originals = [o for o in copies.values()]
    k = by_kind["useful"]
    k["total"] += len(originals)  # every original is useful; it is lost only if both copies went
    k["removed"] += sum(1 for c, o in copies.items() if not kept[c] and not kept[o])
    redundant = [k for name, k in by_kind.items() if not name.startswith("useful")]
    useful = [k for name, k in by_kind.items() if name.startswith("useful")]
    removed_redundant = sum(k["removed"] for k in redundant) / sum(k["total"] for k in redundant)
    removed_useful = sum(k["removed"] for k in useful) / sum(k["total"] for k in useful)
    wrong = [
        {"id": d["id"], "kind": kinds[d["id"]], "kept": d["kept"], "reasons": d["reasons"], "detail": d["detail"]}
        for d in decisions
        if d["kept"] != kinds[d["id"]].startswith("useful") and d["id"] not in copies and d["id"] not in copies.values()
    ]
    shutil.copy(work / "report.md", RESULTS / "train_pruning_report.md")
    return {
        "samples": len(decisions),
        "by_kind": by_kind,
        "redundant_removed": removed_redundant,
        "useful_removed": removed_useful,
        "seconds": seconds,
        "mistakes": wrong,
    }


# ----- report ---------------------------------------------------------------------------
def write_report(throughput: list[dict], pruning: dict | None) -> None:
    from recot.data.atomic import atomic_write_text

    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {_cpus()} CPUs", "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    atomic_write_text(
        RESULTS / "train.json",
        json.dumps({"meta": meta, "throughput": throughput, "pruning": pruning}, indent=2) + "\n",
    )
    lines = [f"Measured {meta['date']} on {meta['machine']} (small preset, float32, sft stage, batch 2, 1 sample per forward)",
             "", "| frames/sample | checkpointing | samples/s | LLM tokens/s | LLM tokens/sample | s/step | peak RSS (MiB) | growth over start (MiB) |",
             "|---:|:---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in throughput:
        lines.append(
            f"| {r['frames']} | {'on' if r['gradient_checkpointing'] else 'off'} | {r['samples_per_s']:.2f} | "
            f"{r['llm_tokens_per_s']:.0f} | {r['llm_tokens_per_sample']:.0f} | {r['seconds_per_step']:.2f} | "
            f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - r['rss_before_mib']:.0f} |"
        )
    if pruning:
        lines += ["", f"Pruning, synthetic set of {pruning['samples']} samples ({pruning['seconds']:.0f} s):", "",
                  "| kind | samples | removed | share removed |", "|---|---:|---:|---:|"]  # fmt: skip
        for kind, k in pruning["by_kind"].items():
            lines.append(f"| {kind} | {k['total']} | {k['removed']} | {k['removed'] / k['total']:.0%} |")
        lines += ["", f"Redundant removed: **{pruning['redundant_removed']:.0%}** (goal >= 80%); useful removed: "
                  f"**{pruning['useful_removed']:.0%}** (goal < 10%)."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    atomic_write_text(RESULTS / "train.md", text)
    print(text)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(throughput_worker(int(sys.argv[2]), bool(int(sys.argv[3])), sys.argv[4])))
        return
    check_dependencies()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("throughput", "pruning", "all"), default="all")
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    args = parser.parse_args()
    sys.path.insert(0, str(SRC))
    previous = json.loads((RESULTS / "train.json").read_text()) if (RESULTS / "train.json").is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        throughput = previous.get("throughput", [])
        if args.part in ("throughput", "all"):
            fresh = run_throughput(args.frames, work)
            # New measurements replace the old ones of the same configuration; the others stay.
            redone = {(r["frames"], r["gradient_checkpointing"]) for r in fresh}
            throughput = [r for r in throughput if (r["frames"], r["gradient_checkpointing"]) not in redone] + fresh
            throughput.sort(key=lambda r: (r["frames"], not r["gradient_checkpointing"]))
        pruning = None
        if args.part in ("pruning", "all"):
            (work / "pruning").mkdir()
            pruning = run_pruning(work / "pruning")
        else:
            pruning = previous.get("pruning")
    write_report(throughput, pruning)


if __name__ == "__main__":
    main()
