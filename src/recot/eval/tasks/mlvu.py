"""MLVU multiple-choice (dev: 7 task types, test: 9), scored as lmms-eval scores it.

Two published layouts are read:

- the MLVU repository's: ``json/1_plotQA.json ... 7_topic_reasoning.json``, rows
  ``{"video", "question", "candidates", "answer": <candidate text>, "question_type"}``,
  videos under ``video/<n>_<type>/``;
- lmms-eval's Hugging Face copy (``sy1998/MLVU_dev`` / ``MLVU_Test``, parquet or
  JSON): rows ``{"video_name", "question" (options included), "answer": <letter>,
  "task_type"}``.

For the first layout the question text is built as ``question + "\\n(A) c0\\n(B) c1..."``,
the shape of the Hugging Face rows (whose exact line breaks are UNVERIFIED).
Prompt (lmms-eval, March 2025): ``"\\n" + question + "\\nOnly give the best option.\\n\\nBest option: ("``;
16 new tokens. Scores are percentages: per-type accuracy, M-avg as the mean over
the benchmark's task types (a type with no answers counts 0, as lmms-eval) and
the micro accuracy over all questions (what the Video-XL authors' fork and
MLVU's own script report).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from recot.eval.api import EvalItem, Prediction, RowError, Scored, accuracy
from recot.eval.extract import mcq_letter, mlvu_legacy
from recot.eval.files import VideoIndex, require, string_list
from recot.eval.tasks._rows import RowTask, letter_answer, lettered, text_answer, video_path

DEV_TYPES = ("plotQA", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning")
TEST_TYPES = (
    "plotQA",
    "needleQA",
    "ego",
    "count",
    "order",
    "anomaly_reco",
    "topic_reasoning",
    "sportsQA",
    "tutorialQA",
)
_OPTION_LINE = re.compile(r"^\(([A-Z])\)\s?(.*)$")


def mlvu_prompt(question_with_options: str) -> str:
    """lmms-eval's MLVU prompt of March 2025 (it ends inside an open parenthesis)."""
    return "\n" + question_with_options + "\nOnly give the best option.\n" + "\n" + "Best option: ("


class MLVU(RowTask):
    """MLVU multiple choice; ``split`` is "dev" or "test"."""

    max_new_tokens = 16
    score_scale = "percent"
    patterns = ("json/[0-9]*_*.json", "**/json/[0-9]*_*.json", "**/*.parquet", "**/*.jsonl", "**/*.json")
    video_subdirs = ("video", "videos", "data")

    def __init__(self, split: str) -> None:
        self.split = split
        self.name = f"mlvu-{split}"
        self.title = f"MLVU {split} (multiple choice)"
        self.types = DEV_TYPES if split == "dev" else TEST_TYPES

    def make_item(self, row: dict[str, Any], path: Path, number: int, index: VideoIndex) -> EvalItem:
        if "video_name" in row:  # lmms-eval's copy: the options are inside the question, the answer is a letter
            require(row, ("video_name", "question", "answer", "task_type"))
            question, task_type, answer = str(row["question"]), str(row["task_type"]), letter_answer(row["answer"])
            options = _options_in(question) or (string_list(row, "candidates") if row.get("candidates") else [])
            if options and "(A)" not in question:
                question = question + "\n" + lettered(options, "({letter}) {option}")
            video = str(row["video_name"])
        else:  # MLVU's own files: candidate texts and the answer text
            require(row, ("video", "question", "candidates", "answer"))
            options = string_list(row, "candidates")
            task_type = str(row.get("question_type") or re.sub(r"^\d+_", "", path.stem))
            answer = text_answer(row["answer"], options, "answer", "candidates")
            question = str(row["question"]) + "\n" + lettered(options, "({letter}) {option}")
            video = str(row["video"])
        if task_type not in self.types:
            raise RowError(f"task type {task_type!r} is not an MLVU {self.split} type ({', '.join(self.types)})")
        item_id = str(row.get("question_id") or f"{task_type}:{path.stem}:{number}")
        return EvalItem(
            id=item_id,
            video=video_path(index, video),
            question=question,
            options=options,
            answer=answer,
            prompt=mlvu_prompt(question),
            groups={"task_type": task_type},
        )

    def score(self, output: str, item: EvalItem, extractor: str, seed: int) -> Scored:
        # legacy: exact, case-sensitive comparison with the letter; current: lmms-eval's A-D extractor.
        extracted = mlvu_legacy(output) if extractor == "legacy" else mcq_letter(output, tuple("ABCD"))
        return Scored(extracted, extracted == item.answer)

    def aggregate(self, predictions: list[Prediction]) -> dict[str, Any]:
        per_type = {}
        for task_type in self.types:
            answered = [p for p in predictions if p.groups.get("task_type") == task_type]
            correct = sum(p.correct for p in answered)
            per_type[task_type] = {
                "correct": correct,
                "total": len(answered),
                "accuracy": accuracy(correct, len(answered), "percent"),
            }
        macro = sum(t["accuracy"] for t in per_type.values()) / len(self.types)
        micro = accuracy(sum(p.correct for p in predictions), len(predictions), "percent")
        return {"overall": macro, "m_avg_macro": macro, "m_avg_micro": micro, "per_task_type": per_type}


def _options_in(question: str) -> list[str]:
    """The "(A) text" option lines inside a question, in order."""
    options = []
    for line in question.splitlines():
        match = _OPTION_LINE.match(line.strip())
        if match and match.group(1) == chr(ord("A") + len(options)):
            options.append(match.group(2))
    return options
