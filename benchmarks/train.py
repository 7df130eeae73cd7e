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
    path: Path,
    seed: int,
    num_frames: int,
    fps: int = 8,
    size: int = 64,
    crf: int | None = None,
    speed: float = 3.0,
    scene: int | None = None,
    shadow: bool | None = None,
    noise: float = 0.0,
    out_size: int | None = None,
) -> Path:
    """A square moving in a straight line (bouncing off the edges) over a textured background.

    ``scene`` (default: ``seed``) picks the background texture and the square's colour, ``seed``
    its start and direction; ``speed`` is in pixels per frame (0: a still video). ``shadow``
    (default: ``speed >= 1``) adds a shadow sweeping across the frame; ``noise`` is the standard
    deviation of per-frame camera noise in grey levels; ``out_size`` rescales the frames (a
    re-upload at another resolution); ``crf`` sets the encoding quality.
    """
    import av
    import numpy as np
    from PIL import Image

    look = np.random.default_rng(seed if scene is None else scene)
    background = look.integers(0, 256, (size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1) // 2 + look.integers(0, 128, 3)
    colour = look.integers(0, 256, 3)
    motion = np.random.default_rng(seed)
    start, angle = motion.uniform(0, size - 16, 2), motion.uniform(0, 2 * np.pi)
    velocity = speed * np.array([np.cos(angle), np.sin(angle)])
    shadow = speed >= 1 if shadow is None else shadow
    grain = np.random.default_rng(seed + 7919)
    width = out_size or size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = width
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"} | ({"crf": str(crf)} if crf is not None else {})
        for i in range(num_frames):
            frame = background.astype(np.float64)
            x, y = (np.abs((start + velocity * i) % (2 * (size - 16)) - (size - 16))).round().astype(int)
            frame[y : y + 16, x : x + 16] = colour
            if shadow:
                frame[:, : 4 + (i * 3) % (size - 4)] /= 2  # a shadow sweeping across: the lighting changes
            if noise:
                frame += grain.normal(0, noise, frame.shape)
            image = np.clip(frame, 0, 255).astype(np.uint8)
            if width != size:
                image = np.asarray(Image.fromarray(image).resize((width, width), Image.BILINEAR))
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
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
    """The synthetic set: ``useful`` distinct samples plus hard useful cases, and ``per_kind`` of each redundant kind.

    Useful: ``useful`` clips of a square moving at 1.5-3 pixels a frame over a textured background (half of
    them under a sweeping shadow), and hard cases that look redundant but are not, ``per_kind`` each: a
    second, different question about a video already in the set; slow clips (0.2-0.6 pixel a frame, no
    shadow, half with camera noise); the same scene as a useful clip (same background and square) moving
    elsewhere, asked the same question.
    Redundant: duplicates (a useful clip re-encoded at lower quality, every other one also at a lower
    resolution, same question and answer), still clips (half with camera noise), and questions the LLM
    answers without the video (the taught facts, on ordinary moving clips).

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

    def answer(i: int) -> str:
        return f"{rng.choice(['a', 'one', 'the'])} {rng.choice(['red', 'blue', 'pale', 'dark'])} {rng.choice(['square', 'block', 'tile'])} {i}"

    frames = 32
    speed_of = rng.uniform(1.5, 3.0, useful)
    for i in range(useful):
        write_moving_video(media / f"u{i}.mp4", seed=1000 + i, num_frames=frames, speed=float(speed_of[i]),
                           shadow=i % 2 == 0)  # fmt: skip
        add("useful", conversation(VIDEO_QUESTIONS[i % 4], answer(i), f"u{i}.mp4"))
    for k in range(per_kind):  # another question about a video already in the set: a new lesson
        i = k * (useful // per_kind) + 1
        add("useful: 2nd question", conversation(VIDEO_QUESTIONS[(i + 2) % 4], f"answer {k} about clip {i}", f"u{i}.mp4"))
    for k in range(per_kind):  # slow clips: little change, but it adds up over the clip
        write_moving_video(media / f"slow{k}.mp4", seed=3000 + k, num_frames=frames, speed=float(rng.uniform(0.2, 0.6)),
                           shadow=False, noise=3.0 if k % 2 else 0.0)  # fmt: skip
        add("useful: slow motion", conversation(VIDEO_QUESTIONS[k % 4], f"a slow square {k}", f"slow{k}.mp4"))
    for k in range(per_kind):  # the same scene as a useful clip, other motion, same question: a different video
        i = k * (useful // per_kind) + 2
        write_moving_video(media / f"sim{k}.mp4", seed=4000 + k, scene=1000 + i, num_frames=frames, speed=2.5,
                           shadow=i % 2 == 0)  # fmt: skip
        add("useful: same scene, other motion", conversation(VIDEO_QUESTIONS[i % 4], answer(100 + k), f"sim{k}.mp4"))
    for k in range(per_kind):  # a useful clip re-encoded (and every other one resized), asked the same question
        i = k * (useful // per_kind)
        write_moving_video(media / f"dup{k}.mp4", seed=1000 + i, num_frames=frames, crf=30, out_size=48 if k % 2 else None,
                           speed=float(speed_of[i]), shadow=i % 2 == 0)  # fmt: skip
        add("duplicate", conversation(rows[i]["conversations"][0]["value"].split("\n", 1)[1],
                                      rows[i]["conversations"][1]["value"], f"dup{k}.mp4"))  # fmt: skip
        copies[rows[-1]["id"]] = rows[i]["id"]
    for k in range(per_kind):  # still clips, half with camera noise
        write_moving_video(media / f"still{k}.mp4", seed=5000 + k, num_frames=frames, speed=0.0,
                           noise=3.0 if k % 2 else 0.0)  # fmt: skip
        add("static", conversation(VIDEO_QUESTIONS[k % 4], f"a still scene {k}", f"still{k}.mp4"))
    for k in range(per_kind):
        write_moving_video(media / f"t{k}.mp4", seed=6000 + k, num_frames=frames, speed=2.0, shadow=k % 2 == 0)
        question, fact = FACTS[k]
        add("text-answerable", conversation(question, fact, f"t{k}.mp4"))
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


def score_decisions(decisions: list[dict], kinds: dict[str, str], copies: dict[str, str]) -> dict:
    """Removed share per kind of sample, and the mistakes, from the pruner's decisions."""
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
    k = by_kind["useful"]
    k["total"] += len(copies)  # every original is useful; it is lost only if both copies went
    k["removed"] += sum(1 for c, o in copies.items() if not kept[c] and not kept[o])
    by_kind = dict(sorted(by_kind.items(), key=lambda kv: (not kv[0].startswith("useful"), kv[0])))
    redundant = [k for name, k in by_kind.items() if not name.startswith("useful")]
    useful = [k for name, k in by_kind.items() if name.startswith("useful")]
    wrong = [
        {"id": d["id"], "kind": kinds[d["id"]], "kept": d["kept"], "reasons": d["reasons"], "detail": d["detail"]}
        for d in decisions
        if d["kept"] != kinds[d["id"]].startswith("useful") and d["id"] not in copies and d["id"] not in copies.values()
    ]
    return {
        "samples": len(decisions),
        "kept": sum(kept.values()),
        "by_kind": by_kind,
        "redundant_removed": sum(k["removed"] for k in redundant) / sum(k["total"] for k in redundant),
        "useful_removed": sum(k["removed"] for k in useful) / sum(k["total"] for k in useful),
        "dropped_without_flag": sum(1 for d in decisions if not d["kept"] and d["reasons"] == ["budget"]),
        "mistakes": wrong,
    }


def run_pruning(work: Path, budgets: tuple[float, ...] = (1.0, 0.6)) -> dict:
    """Prune the synthetic set with default thresholds at each budget (scores computed once, then cached)."""
    import torch

    from recot.train.prune import PruneOptions, prune_file

    torch.set_num_threads(THREADS)
    data, kinds, copies = build_pruning_set(work)
    model = teach_facts(work)
    results = {}
    for budget in budgets:
        started = time.perf_counter()
        options = PruneOptions(budget=budget, fps=8, max_frames=32, progress=True)
        summary = prune_file(data, work / "kept.json", work / f"report_{budget:g}.md", options,
                             media_root=work / "media", model_dir=model, cache_dir=work / "cache")  # fmt: skip
        seconds = time.perf_counter() - started
        print(summary)
        decisions = [json.loads(line) for line in (work / "kept.decisions.jsonl").read_text().splitlines()]
        results[f"{budget:g}"] = score_decisions(decisions, kinds, copies) | {"seconds": seconds, "summary": summary}
        name = "train_pruning_report.md" if budget == 1 else f"train_pruning_report_budget{budget:g}.md"
        shutil.copy(work / f"report_{budget:g}.md", RESULTS / name)
    first = results[f"{budgets[0]:g}"]
    return first | {"budgets": results}


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
        runs = pruning.get("budgets") or {"1": pruning}
        names = list(runs)
        lines += ["", f"Pruning, synthetic set of {pruning['samples']} samples, default thresholds ("
                  + ", ".join(f"budget {b}: {runs[b]['seconds']:.0f} s" for b in names) + "; later budgets reuse "
                  "the cached scores):", "",
                  "| kind | samples | " + " | ".join(f"removed (budget {b})" for b in names) + " |",
                  "|---|---:|" + "---:|" * len(names)]  # fmt: skip
        for kind, k in pruning["by_kind"].items():
            cells = [f"{runs[b]['by_kind'][kind]['removed']} ({runs[b]['by_kind'][kind]['removed'] / k['total']:.0%})"
                     for b in names]  # fmt: skip
            lines.append(f"| {kind} | {k['total']} | " + " | ".join(cells) + " |")
        for b in names:
            r = runs[b]
            lines += ["", f"Budget {b}: kept {r.get('kept', '?')} of {r['samples']}; redundant removed: "
                      f"**{r['redundant_removed']:.0%}** (goal >= 80%); useful removed: **{r['useful_removed']:.0%}** "
                      f"(goal < 10%); samples dropped with no flag: {r.get('dropped_without_flag', '?')}."]  # fmt: skip
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
