"""prefetch(): order, bounded look-ahead, errors re-raised in the consumer, clean stop, no leaked threads."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from recot.data.prefetch import Prefetcher, prefetch


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("recot-prefetch")]


@pytest.fixture(autouse=True)
def no_leaked_threads():
    assert _prefetch_threads() == []
    yield
    assert _prefetch_threads() == [], "a prefetch thread outlived its test"


class Source:
    """A generator-backed source that records how far it got and where it was closed."""

    def __init__(self, n: int, fail_at: int | None = None, error: BaseException | None = None) -> None:
        self.n, self.fail_at, self.error = n, fail_at, error or RuntimeError("decoder broke at item 3")
        self.produced = 0
        self.closed_in: str | None = None
        self.finished = False

    def __iter__(self):
        try:
            for i in range(self.n):
                if i == self.fail_at:
                    raise self.error
                self.produced += 1
                yield i
            self.finished = True
        finally:
            self.closed_in = threading.current_thread().name


def test_items_arrive_in_order_and_the_thread_ends():
    source = Source(50)
    with prefetch(source, depth=3) as items:
        assert list(items) == list(range(50))
    assert source.finished and source.closed_in == "recot-prefetch"


def test_look_ahead_is_bounded_by_depth():
    source = Source(40)
    ahead = []
    with prefetch(source, depth=2) as items:
        for consumed, _ in enumerate(items, 1):
            time.sleep(0.002)  # a slow consumer: the producer fills the queue and waits
            ahead.append(source.produced - consumed)
    # queue of 2 + the item the producer holds while waiting for room
    assert max(ahead) <= 3
    assert max(ahead) >= 2  # and it did run ahead


def test_producer_runs_while_the_consumer_holds_an_item():
    second_item_made = threading.Event()

    def source():
        yield 0
        second_item_made.set()
        yield 1

    with prefetch(source(), depth=1) as items:
        assert next(items) == 0
        # The consumer has not asked for item 1, yet the producer makes it meanwhile.
        assert second_item_made.wait(timeout=10)
        assert next(items) == 1


def test_source_error_is_reraised_in_the_consumer_after_the_items_before_it():
    source = Source(10, fail_at=3)
    received = []
    with pytest.raises(RuntimeError, match="decoder broke at item 3") as info, prefetch(source) as items:
        for item in items:
            received.append(item)
    assert received == [0, 1, 2]
    assert any(frame.name == "__iter__" for frame in info.traceback)  # the source's own frame is kept
    assert source.closed_in == "recot-prefetch"
    assert list(items) == []  # exhausted after the error


def test_base_exceptions_from_the_source_reach_the_consumer():
    source = Source(5, fail_at=1, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt), prefetch(source) as items:
        list(items)


def test_consumer_stopping_early_stops_and_closes_the_source():
    source = Source(10_000)
    with prefetch(source, depth=2) as items:
        for item in items:
            if item == 5:
                break
    assert not items.running
    assert source.closed_in == "recot-prefetch" and not source.finished
    assert source.produced <= 5 + 1 + 3


def test_consumer_error_stops_the_producer():
    source = Source(10_000)
    with pytest.raises(ValueError, match="consumer failed"), prefetch(source) as items:
        for item in items:
            if item == 2:
                raise ValueError("consumer failed")
    assert not items.running and source.closed_in == "recot-prefetch"


def test_close_while_the_producer_is_busy_waits_for_it():
    release = threading.Event()
    closed = []

    def slow():
        try:
            yield 0
            release.wait(timeout=10)  # the producer is inside the source when the consumer stops
            yield 1
        finally:
            closed.append(True)

    items = prefetch(slow(), depth=1)
    assert next(items) == 0
    threading.Timer(0.1, release.set).start()
    items.close()
    assert not items.running and closed == [True]
    items.close()  # idempotent


def test_an_abandoned_prefetcher_stops_its_thread_when_collected():
    source = Source(10_000)
    items = prefetch(source, depth=1)
    next(items)
    thread = items._thread
    del items
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive() and source.closed_in == "recot-prefetch"


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        Prefetcher(iter([]), depth=0)
