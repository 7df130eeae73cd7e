"""Atomic file writes (a temporary name next to the target, renamed into place) and self-removing file locks."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


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


@contextmanager
def exclusive_lock(path: str | Path, timeout: float | None = None, poll: float = 0.05) -> Iterator[None]:
    """Hold an exclusive inter-process lock on the file ``path``, which exists only while the lock is held.

    Waits for another holder (forever when ``timeout`` is None), else raises
    ``TimeoutError`` after ``timeout`` seconds (0: try once). The lock is an
    ``flock`` on the file; the holder deletes the file before unlocking it, so no
    lock files pile up, and a waiter that then gets the lock of the deleted file
    sees that the path no longer names it and tries again on a fresh file. (On
    Windows, ``filelock`` does the same.)
    """
    path = Path(path)
    if fcntl is None:
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(path), timeout=-1 if timeout is None else timeout):
                yield
        except Timeout as exc:
            raise TimeoutError(f"{path} is locked by another process") from exc
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if deadline is None else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{path} is locked by another process") from None
            time.sleep(poll)
            continue
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # the previous holder deleted this file while we waited for it
    try:
        yield
    finally:
        try:  # delete before unlocking, so that a process waiting on this file knows to start over
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                os.unlink(path)
        except FileNotFoundError:  # removed by hand meanwhile
            pass
        os.close(fd)


def build_once(target: Path, build: Callable[[], None]) -> Path:
    """Run ``build`` (which must create ``target`` atomically) unless ``target`` exists.

    A lock beside ``target`` makes concurrent processes build it once; the
    others wait and then use it.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target.with_name(f".{target.name}.lock")):
        if not target.exists():
            build()
    return target
