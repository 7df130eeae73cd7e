"""The evaluation harness's vocabulary: items, predictions, scores and the ``Task`` interface.

A benchmark is a :class:`Task`. It loads the benchmark's published files into
:class:`EvalItem` records (one question each; rows it cannot use become
:class:`Skipped` records instead of errors), builds each prompt, turns the
model's raw output into a :class:`Scored` answer with the benchmark's rule,
and aggregates the :class:`Prediction` records exactly as the benchmark
publishes its numbers. The runner (``recot.eval.runner``) does the rest:
encoding each video once, resuming, sharding and writing the outputs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from recot.video import VideoNotFoundError


class DataError(ValueError):
    """The benchmark's files cannot be used (missing, unreadable or with no usable row); names the file."""


class RowError(ValueError):
    """One annotation row cannot be used; the row is skipped and reported."""


@dataclass
class EvalItem:
    """One question of a benchmark, ready to ask.

    ``video`` is the path of the video file (for generated videos, the key the
    task builds it from); ``answer`` is the ground-truth option letter;
    ``prompt`` the text given to the model (tasks whose prompt depends on the
    sampled frames build it in :meth:`Task.prompt`); ``groups`` the fields the
    scores are broken down by; ``extra`` anything else the task needs.
    """

    id: str
    video: str
    question: str
    options: list[str]
    answer: str
    prompt: str
    groups: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


class Skipped(BaseModel):
    """An item left out of the scores, and why (bad annotation row, missing or unreadable video, model error)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    video: str | None = None
    reason: str


@dataclass
class LoadedData:
    """What a task loaded: its items in dataset order, the rows it skipped and the files it read."""

    items: list[EvalItem]
    skipped: list[Skipped]
    files: dict[str, Path]


class ItemTimings(BaseModel):
    """Seconds spent on one item: obtaining the video's encoding (its first question only), answering."""

    encode: float
    answer: float


class Prediction(BaseModel):
    """One line of ``predictions.jsonl``: the question, the raw output, the extracted answer and its cost."""

    id: str
    video: str
    question: str
    options: list[str]
    answer: str
    prompt: str
    output: str
    extracted: str
    correct: bool
    extractor: str
    groups: dict[str, Any] = {}
    info: dict[str, Any] = {}
    frames: int
    visual_tokens: int
    visual_tokens_kept: int
    new_tokens: int
    cache_hit: bool
    timings: ItemTimings


@dataclass(frozen=True)
class Scored:
    """The benchmark rule's verdict on one output; ``info`` records how it was reached (e.g. a random fallback)."""

    extracted: str
    correct: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoContext:
    """What a prompt may depend on besides the item: the video file and the frame indices the model saw."""

    path: Path
    frame_indices: Sequence[int] | None


class Task:
    """A benchmark: loading, prompting, scoring and aggregation. Subclasses set the class attributes.

    ``name`` is the ``recot eval`` task name; ``max_new_tokens`` the
    benchmark's generation length; ``needs_data`` whether ``--data`` is
    required; ``score_scale`` is "percent" or "fraction", as the benchmark
    publishes its numbers. ``system_prompt`` is the benchmark's own system
    prompt (None: the model's), ``answer_prefix`` the text its prompt starts
    the assistant's turn with (a prefill); the model's output, which
    :meth:`score` reads, is what follows the prefix.
    """

    name: str = ""
    title: str = ""
    max_new_tokens: int = 16
    system_prompt: str | None = None
    answer_prefix: str = ""
    needs_data: bool = True
    score_scale: str = "percent"

    # ----- loading -------------------------------------------------------------------
    def load(self, data: Path | None, videos: Path | None) -> LoadedData:
        """Read the benchmark from ``data`` (a folder or an annotation file); videos are found under
        ``videos`` (default: the data folder). Raises :class:`DataError` when nothing usable is there."""
        raise NotImplementedError

    def limit(self, items: list[EvalItem], n: int) -> list[EvalItem]:
        """The first ``n`` questions (tasks that score groups of questions limit whole groups)."""
        return items[:n]

    def settings(self) -> dict[str, Any]:
        """Task options that change the predictions (recorded in ``results.json``)."""
        return {}

    def attach(self, run_dir: Path) -> None:
        """Called with the run folder before any video is opened (tasks that build videos work under it)."""

    def cleanup(self) -> None:
        """Called once a run has finished (results written): remove working files."""

    # ----- asking ----------------------------------------------------------------------
    @contextmanager
    def open_video(self, video: str) -> Iterator[Path]:
        """The video file of ``video`` while its questions are asked (tasks that generate videos build it here)."""
        path = Path(video)
        if not path.exists():
            raise VideoNotFoundError(path, "no such file")
        yield path

    def prompt(self, item: EvalItem, context: VideoContext) -> str:
        """The text given to the model (default: the prompt built at loading)."""
        return item.prompt

    # ----- scoring ---------------------------------------------------------------------
    def score(self, output: str, item: EvalItem, extractor: str, seed: int) -> Scored:
        """Extract the answer from ``output`` with the ``extractor`` rule and judge it."""
        raise NotImplementedError

    def aggregate(self, predictions: list[Prediction]) -> dict[str, Any]:
        """The benchmark's scores from the predictions (in dataset order); key ``"overall"`` is the headline."""
        raise NotImplementedError

    def write_artifacts(self, scores: dict[str, Any], run_dir: Path) -> list[Path]:
        """Extra output files (e.g. a heatmap); returns their paths."""
        return []


def item_rng(seed: int, item_id: str) -> random.Random:
    """A random generator for one item, the same in any run order, shard or resume."""
    return random.Random(f"{seed}\0{item_id}")


def accuracy(correct: int, total: int, scale: str) -> float:
    """``correct / total`` as a percentage or fraction (0 when ``total`` is 0, as lmms-eval does)."""
    if total == 0:
        return 0.0
    return 100.0 * correct / total if scale == "percent" else correct / total


def grouped_accuracy(predictions: list[Prediction], key: str, scale: str) -> dict[str, dict[str, Any]]:
    """Micro accuracy within each value of ``groups[key]``: ``{value: {correct, total, accuracy}}`` (sorted)."""
    counts: dict[str, list[int]] = {}
    for p in predictions:
        value = str(p.groups.get(key))
        tally = counts.setdefault(value, [0, 0])
        tally[0] += p.correct
        tally[1] += 1
    return {
        value: {"correct": c, "total": t, "accuracy": accuracy(c, t, scale)} for value, (c, t) in sorted(counts.items())
    }


def option_letters(n: int) -> list[str]:
    """The first ``n`` option letters: A, B, C, ..."""
    return [chr(ord("A") + i) for i in range(n)]
