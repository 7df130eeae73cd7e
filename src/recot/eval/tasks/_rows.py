"""The loading loop shared by the annotation-file benchmarks: files -> rows -> items, bad rows reported."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recot.eval.api import DataError, EvalItem, LoadedData, RowError, Skipped
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
