"""Atomic file writes: write to a temporary name next to the target, then rename it into place."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to; renamed onto ``path`` when the block succeeds.

    Readers see either the old file or the complete new one, never a half-written
    file. If the block raises, the temporary file is deleted. Its name is
    ``.<name>.<random>`` + ``suffix`` (a writer that picks the format from the
    extension, such as PyAV, needs ``suffix=".mp4"``); it is not created here, so
    the writer creates it with the usual permissions.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def build_once(target: Path, build: Callable[[], None]) -> Path:
    """Run ``build`` (which must create ``target`` atomically) unless ``target`` exists.

    A lock file beside ``target`` makes concurrent processes build it once; the
    others wait and then use it.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(f"{target.name}.lock"))):
        if not target.exists():
            build()
    return target
