"""What the annotation-file benchmarks share: files -> rows -> items with bad rows reported, answer letters.

A loader is a :class:`RowTask`: it names its annotation file patterns and the
folders its videos may be in, and turns one row into an :class:`EvalItem`
(raising :class:`RowError` for a row it cannot use); :func:`load_rows` does the
reading, the skipping and the id bookkeeping the same way for every benchmark.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recot.eval.api import DataError, EvalItem, LoadedData, RowError, Skipped, Task, option_letters
from recot.eval.files import VideoIndex, find_annotation_files, read_records

#: Makes an item from (row, its file, its index in the file, the video index); raises RowError for a bad row.
MakeItem = Callable[[dict[str, Any], Path, int, VideoIndex], EvalItem]


def load_rows(
    data: Path | None,
    videos: Path | None,
    patterns: Sequence[str],
    make_item: MakeItem,
    video_subdirs: Sequence[str] = (),
) -> LoadedData:
    """Items of every row of the task's annotation files; rows ``make_item`` rejects become :class:`Skipped`.

    Item ids must be unique (resuming relies on them): a repeated id gets the
    file and row appended. Raises :class:`DataError` when ``data`` is missing
    or no row is usable.
    """
    if data is None:
        raise DataError("this task needs --data (the folder or annotation file you downloaded)")
    if not data.exists():
        raise DataError(f"--data {data} does not exist")
    files = find_annotation_files(data, patterns)
    root = videos if videos is not None else (data if data.is_dir() else data.parent)
    index = VideoIndex(root, video_subdirs)
    items: list[EvalItem] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    total_rows = 0
    for path in files:
        rows = read_records(path)
        total_rows += len(rows)
        for number, row in enumerate(rows):
            where = f"{path.name}:{number}"
            try:
                item = make_item(row, path, number, index)
            except RowError as exc:
                skipped.append(
                    Skipped(id=str(row.get("question_id") or row.get("id") or where), reason=f"{where}: {exc}")
                )
                continue
            if item.id in seen:
                item.id = f"{item.id}@{where}"
            seen.add(item.id)
            items.append(item)
    if not items:
        first = f" (first problem: {skipped[0].reason})" if skipped else ""
        raise DataError(f"no usable question in {', '.join(str(f) for f in files)}: {total_rows} rows{first}")
    return LoadedData(items, skipped, {_relative(f, data): f for f in files})


def _relative(path: Path, data: Path) -> str:
    return path.name if data.is_file() else str(path.relative_to(data))


def video_path(index: VideoIndex, reference: str) -> str:
    """The found file of ``reference``, else where it was expected (the run reports it missing)."""
    found = index.find(reference)
    return str(found if found is not None else index.root / reference)


class RowTask(Task):
    """A benchmark read from annotation rows: set ``patterns`` (globs of its files under ``--data``, first match
    wins) and ``video_subdirs`` (folders its videos may be in), and implement :meth:`make_item`."""

    patterns: tuple[str, ...] = ()
    video_subdirs: tuple[str, ...] = ()

    def load(self, data: Path | None, videos: Path | None) -> LoadedData:
        return load_rows(data, videos, self.patterns, self.make_item, self.video_subdirs)

    def make_item(self, row: dict[str, Any], path: Path, number: int, index: VideoIndex) -> EvalItem:
        """The item of row ``number`` of ``path``; raises :class:`RowError` when the row cannot be used."""
        raise NotImplementedError


def letter_answer(value: Any, name: str = "answer") -> str:
    """A ground truth given as an option letter ("A"...), stripped; :class:`RowError` otherwise."""
    answer = str(value).strip()
    if not re.fullmatch(r"[A-Z]", answer):
        raise RowError(f"{name} {answer!r} is not an option letter")
    return answer


def index_answer(value: Any, options: Sequence[str], name: str, what: str = "options") -> str:
    """The letter of a ground truth given as a 0-based index of ``options``; :class:`RowError` otherwise."""
    try:
        choice = int(value)
    except (TypeError, ValueError) as exc:
        raise RowError(f"{name} {value!r} is not an integer") from exc
    if not 0 <= choice < len(options):
        raise RowError(f"{name} {choice} is not an index of the {len(options)} {what}")
    return option_letters(len(options))[choice]


def text_answer(value: Any, options: Sequence[str], name: str, what: str = "options") -> str:
    """The letter of a ground truth given as the text of one of ``options``; :class:`RowError` otherwise."""
    if value not in options:
        raise RowError(f"{name} {value!r} is not one of the {what}")
    return option_letters(len(options))[list(options).index(value)]


def lettered(options: Sequence[str], template: str, separator: str = "\n") -> str:
    """The options written with their letters: ``template`` has ``{letter}`` and ``{option}`` (e.g.
    ``"({letter}) {option}"``); lines joined by ``separator``."""
    return separator.join(
        template.format(letter=letter, option=option)
        for letter, option in zip(option_letters(len(options)), options, strict=True)
    )
