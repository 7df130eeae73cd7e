"""Video-MME (2,700 questions, 900 per duration), with or without subtitles, scored as lmms-eval scores it.

Reads lmms-eval's Hugging Face copy (``lmms-lab/Video-MME``, now
``lmms-eval/Video-MME``: ``videomme/test-*.parquet``, or the same rows as JSON):
``{"videoID", "question_id", "duration", "domain", "sub_category", "task_type",
"question", "options": ["A. ...", ...], "answer": <letter>}``. Videos are
``data/<videoID>.mp4`` (or ``.MP4``/``.mkv``), subtitles ``subtitle/<videoID>.srt``.

Prompt (lmms-eval): the instruction line, the question, the options one per
line, then "\\nAnswer with the option's letter from the given choices
directly."; with subtitles, "This video's subtitles are listed below: \\n" and
the subtitle lines first, and "The best answer is:" last. 16 new tokens.

Subtitles follow lmms-eval's selection with one stated choice: the subtitle
cues kept are those on screen at a frame the model actually saw (lmms-eval
uses 32 evenly spaced frames unless told otherwise), in subtitle order (lmms-eval
deduplicates with a set, whose order is arbitrary).

Scores are percentages: overall = micro accuracy; micro accuracy per duration,
domain, sub-category and task type; and the mean of the three durations (how
the Video-XL authors reported it; equal to the micro accuracy on the full set).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from recot.eval.api import EvalItem, LoadedData, Prediction, RowError, Scored, VideoContext, accuracy, grouped_accuracy
from recot.eval.extract import mcq_letter, videomme_legacy
from recot.eval.files import VideoIndex, require, string_list
from recot.eval.tasks._rows import RowTask, letter_answer

DURATIONS = ("short", "medium", "long")
INSTRUCTION = (
    "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
    "Respond with only the letter (A, B, C, or D) of the correct option."
)
POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."
SUBTITLE_HEADER = "This video's subtitles are listed below: \n"
NO_SUBTITLES = "No subtitles available"
_SUBTITLE_TEXT = re.compile(r'<font color="white" size=".72c">(.*?)</font>')
_SRT_TIME = re.compile(r"^\s*(\d+):(\d+):(\d+)[,.](\d+)\s*-->\s*(\d+):(\d+):(\d+)[,.](\d+)")


def videomme_prompt(question: str, options: list[str]) -> str:
    """lmms-eval's Video-MME prompt without subtitles."""
    return INSTRUCTION + "\n" + question + "\n" + "\n".join(options) + "\n" + POST_PROMPT


def videomme_subtitle_prompt(question: str, options: list[str], subtitles: str) -> str:
    """lmms-eval's Video-MME prompt with subtitles (``videomme_w_subtitle``)."""
    return (
        SUBTITLE_HEADER
        + subtitles
        + "\n"
        + INSTRUCTION
        + "\n"
        + question
        + "\n"
        + "\n".join(options)
        + "\n"
        + "The best answer is:"
    )


def read_srt(path: Path) -> list[tuple[float, float, str]]:
    """Subtitle cues ``(start_s, end_s, text)`` in file order; cue lines are joined with spaces.

    As lmms-eval: blocks separated by a blank line, the second line the time
    range; a repeated time range keeps its first position and the last text.
    Windows line endings are accepted and a block without a readable time is
    left out (lmms-eval would stop with an error).
    """
    text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    cues: dict[tuple[float, float], str] = {}
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if not block.strip() or len(lines) < 3:
            continue
        match = _SRT_TIME.match(lines[1])
        if not match:
            continue
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(g) for g in match.groups())
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        cues[(start, end)] = " ".join(lines[2:])
    return [(start, end, line) for (start, end), line in cues.items()]


def subtitles_at_frames(cues: list[tuple[float, float, str]], fps: float, frame_indices: list[int]) -> str:
    """The text of each cue on screen at one of ``frame_indices`` (``int(t * fps)`` frame spans, end excluded)."""
    lines = []
    for start, end, text in cues:
        first, stop = int(start * fps), int(end * fps)
        if any(first <= i < stop for i in frame_indices):
            match = _SUBTITLE_TEXT.search(text)
            if match:
                lines.append(match.group(1))
    return "\n".join(lines)


class VideoMME(RowTask):
    """Video-MME; ``duration`` restricts to one of short/medium/long; ``subtitles`` adds the subtitle text."""

    max_new_tokens = 16
    score_scale = "percent"
    patterns = ("**/*.parquet", "**/*.jsonl", "**/*.json")
    video_subdirs = ("data", "videos")

    def __init__(self, duration: str | None = None, subtitles: bool = False) -> None:
        self.duration = duration
        self.subtitles = subtitles
        self.name = "videomme" + (f"-{duration}" if duration else "") + ("-w-subtitle" if subtitles else "")
        self.title = "Video-MME" + (f" ({duration})" if duration else "") + (" with subtitles" if subtitles else "")

    def load(self, data: Path | None, videos: Path | None) -> LoadedData:
        loaded = super().load(data, videos)
        if self.duration:
            loaded.items = [i for i in loaded.items if i.groups["duration"] == self.duration]
        return loaded

    def make_item(self, row: dict[str, Any], path: Path, number: int, index: VideoIndex) -> EvalItem:
        require(row, ("videoID", "question", "options", "answer", "duration"))
        options = string_list(row, "options")
        answer = letter_answer(row["answer"])
        if row["duration"] not in DURATIONS:
            raise RowError(f"duration {row['duration']!r} is not one of {', '.join(DURATIONS)}")
        video_id = str(row["videoID"])
        found = next((p for p in (index.find(video_id + ext) for ext in (".mp4", ".MP4", ".mkv")) if p), None)
        video = found if found is not None else index.root / "data" / f"{video_id}.mp4"
        subtitle = next(
            (
                p
                for p in (video.parent.parent / "subtitle", index.root / "subtitle")
                if (p / f"{video_id}.srt").is_file()
            ),
            None,
        )
        return EvalItem(
            id=str(row.get("question_id") or f"{video_id}:{number}"),
            video=str(video),
            question=str(row["question"]),
            options=options,
            answer=answer,
            prompt=videomme_prompt(str(row["question"]), options),
            groups={
                "duration": row["duration"],
                "domain": row.get("domain"),
                "sub_category": row.get("sub_category"),
                "task_type": row.get("task_type"),
            },
            extra={"subtitle": str(subtitle / f"{video_id}.srt") if subtitle else None},
        )

    def prompt(self, item: EvalItem, context: VideoContext) -> str:
        if not self.subtitles:
            return item.prompt
        subtitle = item.extra.get("subtitle")
        if not subtitle:
            text = NO_SUBTITLES
        else:
            from recot.video import probe

            frames = list(context.frame_indices or [])
            text = subtitles_at_frames(read_srt(Path(subtitle)), probe(context.path, index=False).avg_fps, frames)
        return videomme_subtitle_prompt(item.question, item.options, text)

    def score(self, output: str, item: EvalItem, extractor: str, seed: int) -> Scored:
        extracted = videomme_legacy(output) if extractor == "legacy" else mcq_letter(output, tuple("ABCD"))
        return Scored(extracted, extracted.lower() == item.answer.lower())

    def aggregate(self, predictions: list[Prediction]) -> dict[str, Any]:
        by_duration = grouped_accuracy(predictions, "duration", "percent")
        present = [by_duration[d]["accuracy"] for d in DURATIONS if d in by_duration]
        return {
            "overall": accuracy(sum(p.correct for p in predictions), len(predictions), "percent"),
            "mean_of_durations": sum(present) / len(present) if present else 0.0,
            "per_duration": by_duration,
            "per_domain": grouped_accuracy(predictions, "domain", "percent"),
            "per_sub_category": grouped_accuracy(predictions, "sub_category", "percent"),
            "per_task_type": grouped_accuracy(predictions, "task_type", "percent"),
        }
