"""Run an iterator ahead of its consumer in a background thread, through a bounded queue.

    with prefetch(decode_batches(), depth=2) as batches:
        for batch in batches:       # the next batches are being produced meanwhile
            encode(batch)

The producer thread pulls items from the source and puts them on a queue of
at most ``depth`` items, so at most ``depth + 1`` items exist at once (plus the
one the consumer holds): memory stays flat however long the source runs.
Useful when the producer spends its time outside the GIL (video decoding in
FFmpeg, worker processes) while the consumer computes (PyTorch releases the
GIL too).

Guarantees:

* an exception raised by the source is re-raised in the consumer, with its
  original traceback, at the position where the item would have come;
* when the consumer stops early (``break``, an exception, ``close()`` or the
  ``with`` block ending), the producer is told to stop, the source is closed
  in the producer thread (its ``finally`` blocks run there, so a generator
  releases its files and worker processes), and the thread is joined: no
  thread outlives the ``Prefetcher``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")

# How often a blocked producer checks whether the consumer has gone (seconds).
_POLL_SECONDS = 0.05


class _End:
    """Put on the queue after the last item."""


class _Raised:
    """The source raised ``error``; carried to the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, ``depth`` items ahead (see the module docstring).

    Iterate it once. Use it as a context manager, or call :meth:`close`, so the
    thread is stopped as soon as the consumer stops early; a ``Prefetcher``
    dropped without closing stops its thread when it is garbage-collected.
    """

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "recot-prefetch") -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._queue: queue.Queue[T | _End | _Raised] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        # The thread holds the queue, the flag and the source, not this object, so dropping
        # the Prefetcher lets __del__ stop the thread.
        self._thread = threading.Thread(
            target=_produce, args=(iter(source), self._queue, self._stop), name=name, daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _End):
            self._finish()
            raise StopIteration
        if isinstance(item, _Raised):
            self._finish()
            raise item.error
        return item

    def close(self) -> None:
        """Stop the producer (if still running), close the source and join the thread. Idempotent."""
        self._finish()

    @property
    def running(self) -> bool:
        """True while the producer thread is alive."""
        return self._thread.is_alive()

    def _finish(self) -> None:
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            _drain(self._queue)  # a producer blocked on a full queue sees the stop flag within _POLL_SECONDS
            self._thread.join(timeout=_POLL_SECONDS)
        _drain(self._queue)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()


def _produce(source: Iterator[T], items: queue.Queue, stop: threading.Event) -> None:
    """The producer thread: move ``source``'s items onto ``items`` until the end, an error or ``stop``."""
    try:
        for item in source:
            if not _put(items, item, stop):
                return
        _put(items, _End(), stop)
    except BaseException as error:  # noqa: BLE001  (every failure goes to the consumer, KeyboardInterrupt too)
        _put(items, _Raised(error), stop)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # a generator's finally blocks run here, in the thread that ran it


def _put(items: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` on the queue, waiting for room; False when the consumer has stopped."""
    while not stop.is_set():
        try:
            items.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def _drain(items: queue.Queue) -> None:
    try:
        while True:
            items.get_nowait()
    except queue.Empty:
        pass


def prefetch(source: Iterable[T], depth: int = 2) -> Prefetcher[T]:
    """``source``'s items, produced ``depth`` ahead in a background thread (see :class:`Prefetcher`)."""
    return Prefetcher(source, depth)
