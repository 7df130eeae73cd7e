"""iter_frames_parallel(): the same batches as the single-process decoder, from a pool of worker processes."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from recot.data.prefetch import prefetch
from recot.video import (
    CorruptVideoError,
    DecodeTimeoutError,
    PartialDecodeWarning,
    VideoDecodeError,
    iter_frames,
    parallel,
    plan_frames,
    probe,
)
from recot.video.decode import SEEK_COST_FRAMES, plan_runs
from recot.video.parallel import default_decode_workers, iter_frames_parallel, split_plan
from video_fixtures import H, W, corrupt_packets, frame_id, write_video

B_FRAMES = {"x264-params": "keyint=30:min-keyint=30:scenecut=0:bframes=3"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parallel")
    v = {
        # 8 GOPs of 30 frames with B-frames (decode order differs from presentation order)
        "bframes": write_video(root / "bframes.mp4", n=240, options=B_FRAMES),
        # 5 GOPs of 60 frames: a sparse plan makes several single-process decode runs (seeks)
        "gops": write_video(root / "gops.mp4", n=300, options={"x264-params": "keyint=60:min-keyint=60:scenecut=0"}),
    }
    v["damaged"] = corrupt_packets(v["bframes"], root / "damaged.mp4", 100, 111)
    v["damaged_gops"] = corrupt_packets(v["gops"], root / "damaged_gops.mp4", 130, 139)
    return v


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 7 frames (64x48), so a short test video makes several."""
    monkeypatch.setattr(parallel, "PIECE_BYTES", W * H * 3 * 7)
    monkeypatch.setattr(parallel, "MIN_PIECE_FRAMES", 1)


def _decode(batches) -> tuple[list, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = list(batches)
    return out, [str(w.message) for w in caught if issubclass(w.category, PartialDecodeWarning)]


def _assert_same(single: list, multi: list) -> None:
    assert [len(b) for b in multi] == [len(b) for b in single]
    for a, b in zip(single, multi, strict=True):
        np.testing.assert_array_equal(b.indices, a.indices)
        np.testing.assert_array_equal(b.timestamps, a.timestamps)
        np.testing.assert_array_equal(b.frames, a.frames)


PLANS = {
    "every frame": {},
    "uniform 12 (sparse: seeks)": {"num_frames": 12},
    "uniform 40": {"num_frames": 40},
    "repeats": {"num_frames": 410},  # more frames than the video: indices repeat
    "7 fps": {"fps": 7},
    "range": {"fps": 10, "start": 2.5, "end": 8.0},
}


@pytest.mark.parametrize("name", ["bframes", "gops"])
@pytest.mark.parametrize("plan_name", list(PLANS))
def test_same_batches_as_the_single_process_decoder(clips, small_pieces, name, plan_name):
    path = clips[name]
    plan = plan_frames(probe(path), **PLANS[plan_name])
    single, _ = _decode(iter_frames(path, plan, batch_size=9))
    multi, _ = _decode(iter_frames_parallel(path, plan, batch_size=9, workers=2))
    _assert_same(single, multi)
    assert [frame_id(f) for b in multi for f in b.frames] == [int(i) % 256 for b in multi for i in b.indices]  # 8-bit ids


def test_resized_frames_are_the_same(clips, small_pieces):
    plan = plan_frames(probe(clips["bframes"]), num_frames=50)
    single, _ = _decode(iter_frames(clips["bframes"], plan, batch_size=16, size=32))
    multi, _ = _decode(iter_frames_parallel(clips["bframes"], plan, batch_size=16, size=32, workers=3))
    _assert_same(single, multi)


@pytest.mark.parametrize("name", ["damaged", "damaged_gops"])
@pytest.mark.parametrize("plan_name", ["every frame", "uniform 12 (sparse: seeks)", "repeats", "7 fps"])
def test_damaged_video_gives_the_same_frames(clips, small_pieces, monkeypatch, name, plan_name):
    redone = []
    decode_exactly = parallel._decode_exactly
    monkeypatch.setattr(parallel, "_decode_exactly", lambda info, run, *a: redone.append(run) or decode_exactly(info, run, *a))
    path = clips[name]
    plan = plan_frames(probe(path), **PLANS[plan_name])
    single, single_warnings = _decode(iter_frames(path, plan, batch_size=9))
    multi, multi_warnings = _decode(iter_frames_parallel(path, plan, batch_size=9, workers=2))
    _assert_same(single, multi)
    if plan_name == "every frame":  # one run cut at keyframes: the pieces after the damage are decoded again
        assert len(redone) == 1 and redone[0][0] > 0
    decoded = sum(len(b) for b in single)
    if decoded < len(plan):
        assert len(single_warnings) == 1 and len(multi_warnings) == 1
        missing = len(np.unique(plan.indices)) - len(np.unique(np.concatenate([b.indices for b in multi])))
        assert f"{missing} of {len(np.unique(plan.indices))} planned frames could not be decoded" in multi_warnings[0]
    else:
        assert single_warnings == multi_warnings == []


def test_a_plan_where_nothing_decodes_is_an_error(videos, small_pieces):
    path = videos["corrupt_tail_avi"]  # MJPEG, packets 60.. overwritten
    plan = plan_frames(probe(path), start=2.1)  # frames 63..89
    with pytest.raises(CorruptVideoError, match="none of the 27 planned frames could be decoded"):
        list(iter_frames(path, plan))
    with pytest.raises(CorruptVideoError, match="none of the 27 planned frames could be decoded"):
        list(iter_frames_parallel(path, plan, workers=2))
    single, _ = _decode(iter_frames(path, plan_frames(probe(path)), batch_size=9))  # frames 0..59 decode
    multi, warned = _decode(iter_frames_parallel(path, plan_frames(probe(path)), batch_size=9, workers=2))
    _assert_same(single, multi)
    assert len(warned) == 1 and "30 of 90 planned frames could not be decoded" in warned[0]


def test_split_plan_pieces_cover_the_plan_and_start_where_decoding_can(clips):
    info = probe(clips["bframes"])
    wanted = np.unique(plan_frames(info, fps=11).indices)
    pieces, runs = split_plan(info, wanted, piece_frames=5)
    np.testing.assert_array_equal(np.concatenate([p.indices for p in pieces]), wanted)
    np.testing.assert_array_equal(np.concatenate(runs), wanted)
    assert all(len(p.indices) >= 5 for p in pieces[:-1])
    keyframes = set(info.keyframes.tolist())
    for before, piece in zip(pieces[:-1], pieces[1:], strict=True):
        assert piece.continues_run  # one single-process run: every cut is at a keyframe inside it
        assert piece.keyframe in keyframes and before.indices[-1] < piece.keyframe <= piece.indices[0]
        assert piece.decode_indices[0] == piece.keyframe  # the keyframe is decoded first (planned, or the lead)
        assert before.decode_indices[-1] == piece.keyframe - 1  # the frames up to it are decoded before
        # The worker's own decode plan seeks straight to the keyframe and then never seeks again.
        local = plan_runs(info, piece.decode_indices)
        assert len(local) == 1 and local[0].seek_to in (piece.keyframe, None)


def test_split_plan_cuts_at_the_single_process_seeks_first(clips):
    info = probe(clips["gops"])
    wanted = np.unique(plan_frames(info, num_frames=5).indices)  # 0, 74, 149, 224, 299
    runs = plan_runs(info, wanted)
    assert len(runs) == 4
    pieces, _ = split_plan(info, wanted, piece_frames=1)
    starts = {int(r.indices[0]) for r in runs}
    for piece in pieces:
        first = int(piece.indices[0])
        assert piece.continues_run == (first not in starts)
        if not piece.continues_run:
            assert piece.lead is None
            global_seek = next(r.seek_to for r in runs if r.indices[0] == first)
            assert plan_runs(info, piece.decode_indices)[0].seek_to == global_seek


def test_split_plan_keeps_a_dense_gop_whole(clips):
    info = probe(clips["gops"])  # GOPs of 60 frames, every frame planned: cuts only at keyframes
    pieces, _ = split_plan(info, np.arange(300), piece_frames=7)
    assert [len(p.indices) for p in pieces] == [60] * 5
    with pytest.raises(ValueError, match="piece_frames must be >= 1"):
        split_plan(info, np.arange(300), piece_frames=0)


def test_workers_run_at_once_and_are_gone_afterwards(clips, small_pieces):
    plan = plan_frames(probe(clips["bframes"]))
    batches = iter_frames_parallel(clips["bframes"], plan, batch_size=8, workers=2)
    next(batches)
    assert len(multiprocessing.active_children()) == 2
    rest = list(batches)
    assert sum(len(b) for b in rest) == 240 - 8
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no os.getpriority on this platform")
def test_workers_run_below_the_parents_cpu_priority(clips, small_pieces):
    # The decoders feed the parent's encoder: at a lower priority they never hold a core an encoder thread waits for.
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + parallel.WORKER_NICENESS)
    batches = iter_frames_parallel(clips["bframes"], None, batch_size=8, workers=2)
    next(batches)
    children = multiprocessing.active_children()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.getpriority(os.PRIO_PROCESS, c.pid) != expected for c in children):
        time.sleep(0.05)  # a worker lowers its priority as it starts
    assert len(children) == 2 and [os.getpriority(os.PRIO_PROCESS, c.pid) for c in children] == [expected] * 2
    assert os.getpriority(os.PRIO_PROCESS, 0) == expected - parallel.WORKER_NICENESS or expected == 19
    batches.close()


def test_stopping_early_stops_the_workers(clips, small_pieces):
    plan = plan_frames(probe(clips["bframes"]))
    batches = iter_frames_parallel(clips["bframes"], plan, batch_size=8, workers=2)
    next(batches)
    batches.close()
    assert multiprocessing.active_children() == []


_decode_piece = parallel._decode_piece


def _record_piece(indices: np.ndarray, slot: int | None) -> parallel._PieceResult:
    """Stands in for the worker function: notes which piece a worker started, then decodes it."""
    with open(os.environ["RECOT_TEST_PIECES"], "a") as f:
        f.write(f"{int(indices[0])}\n")
    return _decode_piece(indices, slot)


def test_pieces_in_flight_are_bounded(clips, small_pieces, monkeypatch, tmp_path):
    log = tmp_path / "pieces.txt"
    monkeypatch.setenv("RECOT_TEST_PIECES", str(log))
    monkeypatch.setattr(parallel, "_decode_piece", _record_piece)  # inherited by the forked workers
    plan = plan_frames(probe(clips["bframes"]))  # 240 frames: 8 pieces of 30
    batches = iter_frames_parallel(clips["bframes"], plan, batch_size=30, workers=2)
    next(batches)  # the consumer holds the first piece's frames and reads nothing more for a while
    time.sleep(1.0)
    started = log.read_text().split()
    assert len(started) <= parallel.IN_FLIGHT_PER_WORKER * 2 + 1 < 8
    assert sum(len(b) for b in batches) == 210
    assert len(log.read_text().split()) == 8


def test_worker_errors_reach_the_consumer(clips, small_pieces):
    plan = plan_frames(probe(clips["bframes"]))
    with pytest.raises(DecodeTimeoutError, match="budget"):
        list(iter_frames_parallel(clips["bframes"], plan, workers=2, timeout=1e-9))
    assert multiprocessing.active_children() == []


def test_one_worker_images_and_single_pieces_use_the_single_process_decoder(videos, clips, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no pool expected")

    monkeypatch.setattr(parallel, "_context", refuse)
    for path, workers in ((clips["bframes"], 1), (videos["frames_dir"], 4), (videos["png"], 2), (clips["bframes"], 2)):
        plan = plan_frames(probe(path), num_frames=10)  # (at the default piece size 10 frames make one piece)
        _assert_same(list(iter_frames(path, plan, batch_size=4)), list(iter_frames_parallel(path, plan, batch_size=4, workers=workers)))


def test_bad_arguments(clips):
    plan = plan_frames(probe(clips["bframes"]))
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        next(iter_frames_parallel(clips["bframes"], plan, workers=0))
    with pytest.raises(ValueError, match="the plan was made for"):
        next(iter_frames_parallel(clips["gops"], plan, workers=2))


def test_default_workers_by_cores_and_video_length(clips, monkeypatch):
    short = plan_frames(probe(clips["bframes"]), num_frames=10)
    assert default_decode_workers(short) == 1  # a few small frames: not worth a pool
    monkeypatch.setattr(parallel, "available_cores", lambda: 6)
    assert default_decode_workers(short) == 1
    monkeypatch.setattr(parallel, "MIN_PARALLEL_SECONDS", 0.0)
    assert default_decode_workers(short) == 6
    monkeypatch.setattr(parallel, "available_cores", lambda: 1)
    assert default_decode_workers(short) == 1


def test_estimate_counts_decoded_and_output_pixels(clips):
    info = probe(clips["gops"])
    plan = plan_frames(info, num_frames=12)
    decoded = sum(int(r.indices[-1]) + 1 - (r.seek_to or 0) for r in plan_runs(info, np.unique(plan.indices)))
    expected = (decoded * W * H * parallel._DECODE_SECONDS_PER_MEGAPIXEL + 12 * 384 * 384 * parallel._CONVERT_SECONDS_PER_MEGAPIXEL) / 1e6
    assert parallel.estimated_decode_seconds(plan, 384) == pytest.approx(expected)
    assert SEEK_COST_FRAMES < 60  # the sparse plan above does seek (decoded < every frame)
    assert decoded < 300


def test_piece_size_by_workers_memory_and_a_floor(clips, monkeypatch):
    info = probe(clips["bframes"])  # 64x48
    assert parallel.piece_frames_for(info, None, 4096, 2) == 4096 // (2 * parallel.PIECES_PER_WORKER)
    assert parallel.piece_frames_for(info, None, 100, 2) == parallel.MIN_PIECE_FRAMES
    monkeypatch.setattr(parallel, "PIECE_BYTES", 40 * 64 * 48 * 3)
    assert parallel.piece_frames_for(info, None, 4096, 2) == 40  # capped by memory
    assert parallel.piece_frames_for(info, 32, 4096, 2) == 40 * 64 * 48 // (32 * 32)  # smaller frames: more fit


def test_damage_is_described_without_the_pieces_counts():
    path = "/v/x.mp4"
    stopped = f"{path}: decoding stopped after frame 97 at 3.233 s (decoder error: bad); 20 of 32 planned frames, from 3.3 s on, are missing"
    assert parallel._cause(stopped, path) == "decoding stopped after frame 97 at 3.233 s (decoder error: bad)"
    assert parallel._cause("none of the 27 planned frames could be decoded (read error: eof)", path) == "read error: eof"
    assert parallel._cause("none of the 27 planned frames could be decoded", path) == "none of the 27 planned frames could be decoded"


def test_many_early_stops_from_a_background_thread_never_hang(clips, small_pieces):
    # multiprocessing.Pool.terminate() deadlocked about once in a hundred such stops; each worker now owns a pipe.
    path = clips["bframes"]

    def stop_early(rounds: int) -> None:
        for k in range(rounds):
            with prefetch(iter_frames_parallel(path, None, batch_size=8, workers=2)) as batches:
                for i, _ in enumerate(batches):
                    if i >= k % 3:
                        break

    thread = threading.Thread(target=stop_early, args=(60,), daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "an early stop hung"
    assert multiprocessing.active_children() == []


def _die(indices: np.ndarray, slot: int | None) -> parallel._PieceResult:
    os._exit(3)


def _fail(indices: np.ndarray, slot: int | None) -> parallel._PieceResult:
    raise KeyError("a bug")


def test_a_dead_or_failing_worker_is_an_error_not_a_hang(clips, small_pieces, monkeypatch):
    path = clips["bframes"]
    monkeypatch.setattr(parallel, "_decode_piece", _die)  # inherited by the forked workers
    with pytest.raises(VideoDecodeError, match=r"a decoding worker process died \(exit code 3\)"):
        list(iter_frames_parallel(path, None, workers=2))
    monkeypatch.setattr(parallel, "_decode_piece", _fail)
    with pytest.raises(RuntimeError, match="decoding worker failed: KeyError: 'a bug'"):
        list(iter_frames_parallel(path, None, workers=2))
    assert multiprocessing.active_children() == []
