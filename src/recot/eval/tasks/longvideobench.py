"""LongVideoBench validation set (1,337 questions), video-only as lmms-eval's ``longvideobench_val_v``.

Reads the official ``lvb_val.json`` (``"candidates"`` list, ``"correct_choice"``
0-based) or lmms-eval's parquet copy (``option0`` ... ``option4``, missing
options given as "N/A"); videos are ``videos/<video_path>``.

Prompt: ``question + "\\n" + "A. c0\\nB. c1..." + "\\n" + "Answer with the option's letter
from the given choices directly.\\n"``; 32 new tokens. The answer parser is
LongVideoBench's own (lmms-eval never replaced it, so ``--extractor`` does not
change it): the first capital A-E after removing answer phrases, else a
random option. The random fallback is seeded per item (``--seed`` and the
item id), so scores are reproducible, and each prediction records whether it
fired. Scores are fractions (0-1): overall micro accuracy, and per duration
group and question category.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recot.eval.api import EvalItem, Prediction, RowError, Scored, accuracy, grouped_accuracy, item_rng
from recot.eval.extract import longvideobench_choice
from recot.eval.files import VideoIndex, require, string_list
from recot.eval.tasks._rows import RowTask, index_answer, lettered, video_path

POST_PROMPT = "Answer with the option's letter from the given choices directly.\n"


def longvideobench_prompt(question: str, options: list[str]) -> str:
    """lmms-eval's ``longvideobench_val_v`` prompt (no "Question: " prefix)."""
    return f"{question}\n{lettered(options, '{letter}. {option}')}\n{POST_PROMPT}"


class LongVideoBenchVal(RowTask):
    name = "longvideobench-val"
    title = "LongVideoBench val (video only)"
    max_new_tokens = 32
    score_scale = "fraction"
    patterns = ("**/lvb_val.json", "**/validation*.parquet", "**/*val*.parquet", "**/*val*.json")
    video_subdirs = ("videos",)

    def make_item(self, row: dict[str, Any], path: Path, number: int, index: VideoIndex) -> EvalItem:
        require(row, ("question", "correct_choice", "video_path"))
        if row.get("candidates") is not None:
            options = string_list(row, "candidates")
        else:
            options = []
            for i in range(5):  # lmms-eval's copy: option0..option4, "N/A" where a question has fewer
                value = row.get(f"option{i}")
                if value is None or value == "N/A":
                    break
                options.append(str(value))
            if not options:
                raise RowError("no candidates and no option0..option4 fields")
        answer = index_answer(row["correct_choice"], options, "correct_choice", "candidates")
        return EvalItem(
            id=str(row.get("id") or f"{path.stem}:{number}"),
            video=video_path(index, str(row["video_path"])),
            question=str(row["question"]),
            options=options,
            answer=answer,
            prompt=longvideobench_prompt(str(row["question"]), options),
            groups={"duration_group": row.get("duration_group"), "question_category": row.get("question_category")},
        )

    def score(self, output: str, item: EvalItem, extractor: str, seed: int) -> Scored:
        letter, fell_back = longvideobench_choice(output, len(item.options), item_rng(seed, item.id))
        return Scored(letter, letter == item.answer, {"random_fallback": fell_back})

    def aggregate(self, predictions: list[Prediction]) -> dict[str, Any]:
        return {
            "overall": accuracy(sum(p.correct for p in predictions), len(predictions), "fraction"),
            "random_fallbacks": sum(bool(p.info.get("random_fallback")) for p in predictions),
            "per_duration_group": grouped_accuracy(predictions, "duration_group", "fraction"),
            "per_question_category": grouped_accuracy(predictions, "question_category", "fraction"),
        }
