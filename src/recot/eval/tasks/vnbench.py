"""VNBench (VideoNIAH): each sample asked 4 times with shuffled options, correct only if all 4 are.

Reads ``VNBench-main-4try.json`` (a JSON list): rows ``{"video", "question",
"options": [4 texts], "gt": <answer text> (or 0-3), "type", "try"}``; videos are
found by file name under the data folder. A sample is one video (there is one
per source video and task type), its rows its tries.

Prompt and generation as the Video-XL authors ran VNBench: their system prompt
(:data:`SYSTEM_PROMPT`, "Carefully watch this video ..."), the user text
``"Question: {q}\\nOptions:\\n(A) o1\\n(B) o2\\n(C) o3\\n(D) o4\\n"``, no assistant
prefill, greedy, 1,024 new tokens.
Legacy extraction is theirs (inside the first "(...)") followed by VNBench's
``eval.py`` (text before the first ".", first of A, B, C, D in it); current is
lmms-eval's shared extractor. Scoring is ``eval.py``'s: a sample counts only
when exactly 4 of its tries are correct; accuracy per task type = such samples /
samples; overall = unweighted mean over task types; fractions (0-1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recot.eval.api import EvalItem, LoadedData, Prediction, Scored
from recot.eval.extract import mcq_letter, vnbench_legacy
from recot.eval.files import VideoIndex, require, string_list
from recot.eval.tasks._rows import RowTask, index_answer, lettered, text_answer, video_path

TRIES = 4
#: The Video-XL authors' VNBench system prompt (``Video-XL/eval/eval_vnbench.py``).
SYSTEM_PROMPT = (
    "Carefully watch this video and pay attention to every detail. "
    "Based on your observations, select the best option that accurately addresses the question."
)


def vnbench_prompt(question: str, options: list[str]) -> str:
    """The Video-XL authors' VNBench question text: options as "(A) text" lines, no answer instruction."""
    return f"Question: {question}\nOptions:\n{lettered(options, '({letter}) {option}')}\n"


class VNBench(RowTask):
    name = "vnbench"
    title = "VNBench (4 tries, all correct)"
    max_new_tokens = 1024
    score_scale = "fraction"
    system_prompt = SYSTEM_PROMPT
    patterns = ("**/VNBench-main-4try.json", "**/*4try*.json", "**/*.json")
    video_subdirs = ("VNBench",)

    def load(self, data: Path | None, videos: Path | None) -> LoadedData:
        self._tries_seen: dict[str, int] = {}  # rows without "try" are numbered in file order per sample
        return super().load(data, videos)

    def make_item(self, row: dict[str, Any], path: Path, number: int, index: VideoIndex) -> EvalItem:
        require(row, ("video", "question", "options", "gt", "type"))
        options = string_list(row, "options")
        gt = row["gt"]
        if isinstance(gt, int) and not isinstance(gt, bool):  # the answer's index (official eval.py accepts both)
            answer = index_answer(gt, options, "gt")
        else:
            answer = text_answer(str(gt), options, "gt")
        sample = Path(str(row["video"])).stem
        counter = self._tries_seen.get(sample, 0)
        self._tries_seen[sample] = counter + 1
        attempt = row.get("try")
        attempt = (
            int(attempt) if isinstance(attempt, int) or (isinstance(attempt, str) and attempt.isdigit()) else counter
        )
        return EvalItem(
            id=f"{sample}_{attempt}",
            video=video_path(index, str(row["video"])),
            question=str(row["question"]),
            options=options,
            answer=answer,
            prompt=vnbench_prompt(str(row["question"]), options),
            groups={"type": str(row["type"]), "sample": sample, "try": attempt},
        )

    def limit(self, items: list[EvalItem], n: int) -> list[EvalItem]:
        """The tries of the first ``n`` samples."""
        samples: list[str] = []
        for item in items:
            if item.groups["sample"] not in samples:
                samples.append(item.groups["sample"])
        kept = set(samples[:n])
        return [i for i in items if i.groups["sample"] in kept]

    def score(self, output: str, item: EvalItem, extractor: str, seed: int) -> Scored:
        extracted = vnbench_legacy(output) if extractor == "legacy" else mcq_letter(output, tuple("ABCD"))
        return Scored(extracted, extracted == item.answer)

    def aggregate(self, predictions: list[Prediction]) -> dict[str, Any]:
        samples: dict[str, dict[str, Any]] = {}
        for p in predictions:
            s = samples.setdefault(p.groups["sample"], {"type": p.groups["type"], "correct": 0, "tries": 0})
            s["correct"] += p.correct
            s["tries"] += 1
        per_type: dict[str, dict[str, Any]] = {}
        for s in samples.values():
            t = per_type.setdefault(s["type"], {"correct": 0, "total": 0})
            t["correct"] += s["correct"] == TRIES
            t["total"] += 1
        for t in per_type.values():
            t["accuracy"] = t["correct"] / t["total"]
        per_type = dict(sorted(per_type.items()))
        return {
            "overall": sum(t["accuracy"] for t in per_type.values()) / len(per_type) if per_type else 0.0,
            "per_type": per_type,
            "samples": len(samples),
            "incomplete_samples": sum(s["tries"] != TRIES for s in samples.values()),
            "try_accuracy": sum(p.correct for p in predictions) / len(predictions) if predictions else 0.0,
        }
