"""V-NIAH, needle in a video haystack, fully offline: a grid of haystack lengths x needle depths.

Each cell (``L`` haystack frames, depth ``d`` percent) asks every needle's
question about a video made by :mod:`recot.eval.needle`: ``L`` frames sampled
evenly over the haystack, the needle image inserted for ``N`` seconds before
frame ``int(L * d / 100)``. The model sees every frame of the cell (``L + N``,
1 fps). The question describes the needle, never where it is.

Needles: the Video-XL question file format with the user's needle images
(``--data FOLDER``; the Video-XL file itself ships with recot), or, with no
``--data``, five generated needles. Prompt as Video-XL's tester: system prompt
"You are a helpful assistant.", user text ``"Question: {retrieval_question}\\nAnswer: "``
and the assistant's turn prefilled with "Best option:(" (:data:`ANSWER_PREFIX`), so the
model's output continues after the open parenthesis ("D) reading"). One stated
difference: recot's template puts a newline after ``<image>``, Video-XL's tester
none. Legacy scoring is Video-XL's (the answer letter occurs in the output before
its first ")"), current is lmms-eval's shared extractor, both on the output after
the prefix. 32 new tokens (Video-XL allowed 1,024; its check reads only up to
the first ")"). Scores are fractions: accuracy per cell = mean over needles;
overall = mean over cells; a heatmap (haystack frames on x, depth on y) is
written next to the results.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from recot.eval.api import (
    DataError,
    EvalItem,
    LoadedData,
    Prediction,
    Scored,
    Skipped,
    Task,
    accuracy,
)
from recot.eval.extract import (
    mcq_letter,
    vniah_legacy_checked_text,
    vniah_legacy_correct,
)
from recot.eval.needle import (
    haystack_clip,
    load_needle_image,
    read_needle_file,
    resolve_needle_image,
    write_cell,
)

DEFAULT_FRAMES = (64, 128, 256)
DEFAULT_DEPTHS = (0.0, 50.0, 100.0)
QUESTION_FILES = ("qa.json", "videoxl_niah_qa.json")
#: Video-XL's V-NIAH tester (``Video-XL/NIAH``): its system prompt and the text its assistant turn starts with.
SYSTEM_PROMPT = "You are a helpful assistant."
ANSWER_PREFIX = "Best option:("


def bundled_question_file() -> Path:
    """The Video-XL needle question file shipped with recot (Apache-2.0, see ``data/SOURCE.md``)."""
    return Path(str(resources.files("recot.eval") / "data" / "videoxl_niah_qa.json"))


def vniah_prompt(retrieval_question: str) -> str:
    """Video-XL's V-NIAH user text (its questions start with "Question: " already, so it appears twice)."""
    return f"Question: {retrieval_question}\nAnswer: "


def cell_key(frames: int, depth: float, needle: int) -> str:
    """The id of one question (and of its cell video)."""
    return f"frames{frames}-depth{depth:g}-needle{needle}"


class VNIAH(Task):
    """V-NIAH over ``haystack`` with a ``frames`` x ``depths`` grid, needles shown ``needle_seconds`` seconds,
    frames written at ``frame_size`` (the model's input size)."""

    name = "vniah"
    title = "V-NIAH (needle in a video haystack)"
    max_new_tokens = 32
    needs_data = False
    score_scale = "fraction"
    system_prompt = SYSTEM_PROMPT
    answer_prefix = ANSWER_PREFIX

    def __init__(
        self,
        haystack: Path,
        frames: tuple[int, ...] = DEFAULT_FRAMES,
        depths: tuple[float, ...] = DEFAULT_DEPTHS,
        needle_seconds: int = 1,
        frame_size: int = 384,
        synthetic_needles: Path | None = None,
    ) -> None:
        if not frames or any(f < 1 for f in frames):
            raise ValueError(f"--grid-frames must be positive frame counts, got {list(frames)}")
        if not depths or any(not 0 <= d <= 100 for d in depths):
            raise ValueError(f"--depths must be percentages in [0, 100], got {list(depths)}")
        if needle_seconds < 1:
            raise ValueError(f"--needle-seconds must be >= 1, got {needle_seconds}")
        self.haystack = haystack
        self.frames = tuple(sorted(set(frames)))
        self.depths = tuple(sorted(set(depths)))
        self.needle_seconds = needle_seconds
        self.frame_size = frame_size
        self.synthetic_needles = synthetic_needles
        self.work_dir: Path | None = None
        self._needle_pixels: dict[str, np.ndarray] = {}
        self._cells: dict[str, EvalItem] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "grid_frames": list(self.frames),
            "depths_percent": list(self.depths),
            "needle_seconds": self.needle_seconds,
            "frame_size": self.frame_size,
            "cell_fps": 1,
            "haystack_sampling": "floor(linspace(0, total-1, frames))",
        }

    # ----- loading --------------------------------------------------------------------------
    def load(self, data: Path | None, videos: Path | None) -> LoadedData:
        from recot.video import VideoDecodeError, probe

        folder, questions_file = self._needle_source(data)
        needles = read_needle_file(questions_file)
        try:
            total = probe(self.haystack).num_frames
        except VideoDecodeError as exc:
            raise DataError(f"--haystack: {exc}") from exc
        if max(self.frames) > total:
            raise DataError(
                f"--haystack {self.haystack} has {total} frames; --grid-frames asks for up to {max(self.frames)}"
            )
        files = {"haystack": self.haystack, "questions": questions_file}
        items: list[EvalItem] = []
        skipped: list[Skipped] = []
        for k, needle in enumerate(needles):
            image = resolve_needle_image(folder, needle.image)
            if image is not None:
                files[f"needle{k}"] = image
            for frames in self.frames:
                for depth in self.depths:
                    key = cell_key(frames, depth, k)
                    if image is None:
                        skipped.append(Skipped(id=key, reason=f"needle image {needle.image!r} not found in {folder}"))
                        continue
                    items.append(
                        EvalItem(
                            id=key,
                            video=key,
                            question=needle.question,
                            options=needle.options,
                            answer=needle.answer,
                            prompt=vniah_prompt(needle.question),
                            groups={"frames": frames, "depth": depth, "needle": k},
                            extra={"needle_image": str(image)},
                        )
                    )
        if not items:
            raise DataError(f"no needle image of {questions_file} was found in {folder}")
        self._cells = {item.video: item for item in items}
        return LoadedData(items, skipped, files)

    def _needle_source(self, data: Path | None) -> tuple[Path, Path]:
        """(needle image folder, question file) from ``--data`` (a folder or a question file)."""
        if data is None:
            if self.synthetic_needles is None:
                raise DataError("no needles: pass --data FOLDER with the needle images")
            return self.synthetic_needles, self.synthetic_needles / "qa.json"
        if not data.exists():
            raise DataError(f"--data {data} does not exist")
        if data.is_file():
            return data.parent, data
        for name in QUESTION_FILES:
            if (data / name).is_file():
                return data, data / name
        return data, bundled_question_file()

    # ----- cells -------------------------------------------------------------------------------
    def attach(self, run_dir: Path) -> None:
        self.work_dir = run_dir / "work"

    def cleanup(self) -> None:
        """Remove the haystack clips (a rerun that needs them builds them again)."""
        if self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    @contextmanager
    def open_video(self, video: str) -> Iterator[Path]:
        """Build the cell video of ``video`` (a :func:`cell_key`), yield it, delete it afterwards."""
        if self.work_dir is None:
            raise RuntimeError("VNIAH.attach(run_dir) must be called before building cells")
        item = self._cells[video]
        frames, depth = item.groups["frames"], item.groups["depth"]
        self.work_dir.mkdir(parents=True, exist_ok=True)
        clip = haystack_clip(self.haystack, frames, self.frame_size, self.work_dir / f"haystack-frames{frames}.mov")
        image = item.extra["needle_image"]
        if image not in self._needle_pixels:
            self._needle_pixels[image] = load_needle_image(Path(image), self.frame_size)
        path = write_cell(
            clip, frames, self._needle_pixels[image], depth, self.needle_seconds, self.work_dir / f"{video}.mov"
        )
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    # ----- scoring -----------------------------------------------------------------------------
    def score(self, output: str, item: EvalItem, extractor: str, seed: int) -> Scored:
        if extractor == "legacy":
            return Scored(vniah_legacy_checked_text(output), vniah_legacy_correct(output, item.answer))
        extracted = mcq_letter(output, tuple("ABCD"))
        return Scored(extracted, extracted == item.answer)

    def aggregate(self, predictions: list[Prediction]) -> dict[str, Any]:
        cells: dict[tuple[int, float], list[bool]] = {}
        for p in predictions:
            cells.setdefault((p.groups["frames"], p.groups["depth"]), []).append(p.correct)
        cell_accuracy = {key: sum(v) / len(v) for key, v in cells.items()}
        grid = [[cell_accuracy.get((f, d)) for f in self.frames] for d in self.depths]
        return {
            "overall": sum(cell_accuracy.values()) / len(cell_accuracy) if cell_accuracy else 0.0,
            "micro": accuracy(sum(p.correct for p in predictions), len(predictions), "fraction"),
            "grid": {"frames": list(self.frames), "depths_percent": list(self.depths), "accuracy": grid},
            "per_cell": {
                f"frames{f}-depth{d:g}": {"correct": sum(v), "total": len(v)} for (f, d), v in sorted(cells.items())
            },
        }

    def write_artifacts(self, scores: dict[str, Any], run_dir: Path) -> list[Path]:
        return [write_heatmap(scores, run_dir / "heatmap.png")]


def write_heatmap(scores: dict[str, Any], path: Path) -> Path:
    """Accuracy per cell as a heatmap (haystack frames on x, needle depth on y), written atomically."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise DataError(
            "the V-NIAH heatmap needs matplotlib: pip install 'recot[eval]' (or pass --no-heatmap)"
        ) from exc
    from recot.data.atomic import atomic_path

    grid = scores["grid"]
    values = np.array([[np.nan if v is None else v for v in row] for row in grid["accuracy"]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(grid["frames"]) + 2.5, 0.6 * len(grid["depths_percent"]) + 2))
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto", origin="upper")
    ax.set_xticks(range(len(grid["frames"])), [str(f) for f in grid["frames"]])
    ax.set_yticks(range(len(grid["depths_percent"])), [f"{d:g}%" for d in grid["depths_percent"]])
    ax.set_xlabel("haystack frames")
    ax.set_ylabel("needle depth")
    for (row, col), value in np.ndenumerate(values):
        ax.text(col, row, "-" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"V-NIAH accuracy (mean {scores['overall']:.3f})")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
