"""Reading benchmark files as published: JSON lists, JSON Lines, parquet; finding their videos.

Benchmarks ship annotations in several layouts (a JSON list, one JSON file per
task type, a Hugging Face parquet shard) and videos in folders whose names
changed between releases. The readers here accept each published shape and
report anything else as a :class:`~recot.eval.api.DataError` naming the file;
videos are looked up by relative path first, then by file name anywhere under
the videos folder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from recot.eval.api import DataError, RowError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".ts")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The rows of an annotation file: a JSON list (or ``{"data": [...]}``), JSON Lines, or parquet."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if suffix == ".jsonl":
        return _read_json_lines(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text:
            return _read_json_lines(path, text)  # JSON Lines saved as .json
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list) and all(isinstance(r, dict) for r in v)]
        if len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON list of objects (one per question)")
    return data


def _read_json_lines(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object")
        rows.append(row)
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"reading {path} needs pyarrow: pip install 'recot[eval]'") from exc
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise DataError(f"cannot read parquet file {path}: {exc}") from exc


def find_annotation_files(data: Path, patterns: Sequence[str]) -> list[Path]:
    """``data`` itself when it is a file; else the files of the first glob pattern that matches under it."""
    if data.is_file():
        return [data]
    for pattern in patterns:
        found = sorted(p for p in data.glob(pattern) if p.is_file() and not p.name.startswith("."))
        if found:
            return found
    raise DataError(f"no annotation file under {data} (looked for {', '.join(patterns)}); pass the file with --data")


def require(row: dict[str, Any], fields: Iterable[str]) -> None:
    """Raise :class:`RowError` naming the fields ``row`` lacks (or has empty)."""
    missing = [f for f in fields if row.get(f) is None or row.get(f) == ""]
    if missing:
        raise RowError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


def string_list(row: dict[str, Any], name: str) -> list[str]:
    """``row[name]`` as a list of strings (a JSON-encoded list is accepted too), or :class:`RowError`."""
    value = row.get(name)
    if isinstance(value, str):
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    if hasattr(value, "tolist"):  # numpy arrays from parquet readers
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise RowError(f"field {name} must be a non-empty list of strings, got {value!r}"[:200])
    return list(value)


class VideoIndex:
    """Finds a benchmark's video files under a root folder.

    A reference is tried as a path relative to the root and to each of
    ``subdirs``; failing that, by file name (then by stem with any video
    extension) anywhere under the root, from an index built on first use.
    """

    def __init__(self, root: Path, subdirs: Sequence[str] = ()) -> None:
        self.root = root
        self.subdirs = tuple(subdirs)
        self._by_name: dict[str, list[Path]] | None = None
        self._by_stem: dict[str, list[Path]] | None = None

    def find(self, reference: str) -> Path | None:
        """The file ``reference`` names, or None."""
        ref = Path(reference)
        if ref.is_absolute():
            return ref if ref.is_file() else None
        for base in (self.root, *(self.root / s for s in self.subdirs)):
            candidate = base / ref
            if candidate.is_file():
                return candidate
        self._build()
        assert self._by_name is not None and self._by_stem is not None
        matches = self._by_name.get(ref.name) or self._by_stem.get(ref.name) or self._by_stem.get(ref.stem)
        return matches[0] if matches else None

    def _build(self) -> None:
        if self._by_name is not None:
            return
        self._by_name, self._by_stem = {}, {}
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
                self._by_name.setdefault(path.name, []).append(path)
                self._by_stem.setdefault(path.stem, []).append(path)
