"""Self-removing file locks (recot.data.atomic.exclusive_lock) and the helpers built on them."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from recot.data.atomic import build_once, exclusive_lock


def _count_under_lock(lock: str, counter: str, times: int) -> None:
    for _ in range(times):
        with exclusive_lock(lock):
            value = int(Path(counter).read_text())  # a read-modify-write that loses updates without the lock
            Path(counter).write_text(str(value + 1))


def test_processes_take_turns_and_no_lock_file_is_left(tmp_path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_count_under_lock, args=(str(tmp_path / "x.lock"), str(counter), 40)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert counter.read_text() == "120"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter"]


def test_timeout_while_held_then_free(tmp_path) -> None:
    lock = tmp_path / "x.lock"
    with exclusive_lock(lock):
        assert lock.exists()
        with pytest.raises(TimeoutError, match="x.lock is locked by another process"), exclusive_lock(lock, timeout=0):
            pass
        with pytest.raises(TimeoutError), exclusive_lock(lock, timeout=0.2):
            pass
    assert not lock.exists()
    with exclusive_lock(lock, timeout=0):  # free again
        pass
    assert not lock.exists()


def test_a_stale_lock_file_does_not_block(tmp_path) -> None:
    lock = tmp_path / "x.lock"
    lock.write_text("")  # left by a process that was killed while holding the lock: flock died with it
    with exclusive_lock(lock, timeout=0):
        pass
    assert not lock.exists()


def test_build_once_builds_once_and_leaves_only_the_target(tmp_path) -> None:
    calls = []
    target = tmp_path / "thing.txt"
    assert build_once(target, lambda: (calls.append(1), target.write_text("built"))) == target
    assert build_once(target, lambda: calls.append(2)) == target
    assert calls == [1] and sorted(p.name for p in tmp_path.iterdir()) == ["thing.txt"]
