"""Decode one video on every core: the planned frames split into pieces decoded by worker processes.

:func:`iter_frames_parallel` yields the same batches as :func:`recot.video.iter_frames`
(same frames, indices, timestamps and batch boundaries), decoded by a pool of
worker processes.

Splitting. The planned frames (sorted, without repeats) are cut into contiguous
*pieces*, about ``PIECES_PER_WORKER`` per worker (at most ``PIECE_BYTES`` of
output frames, at least ``MIN_PIECE_FRAMES`` frames each). A piece starts only
where decoding can start afresh at no extra cost:

* where the single-process decoder seeks anyway, at the start of one of its
  decode runs (:func:`recot.video.decode.plan_runs`): the worker makes the same
  seek and decodes exactly what the single-process decoder decodes, damaged data
  included;
* inside a run, at a keyframe (a dense plan has few runs): the worker seeks to
  the keyframe instead of decoding through. A keyframe is a clean random-access
  point, so the frames are the same. The two pieces around such a cut also
  decode the frame just before the keyframe and the keyframe itself, so that
  together they decode every frame the run decodes; if either meets damaged
  data, the rest of that run is decoded again as one piece, as the
  single-process decoder does it. Damaged files therefore give the same frames.

Scheduling. Pieces are handed out in turn to ``workers`` processes, each with
its own pipe (pieces are about the same size, so they all run at once). The consumer
reads the results in piece order and keeps at most ``IN_FLIGHT_PER_WORKER *
workers`` pieces submitted, so memory stays flat however long the video. Each
worker runs the single-process decoder on its piece, with ``cores // workers``
FFmpeg threads, at a lower CPU priority than the process that reads the
frames (``WORKER_NICENESS``), so that they never hold a core its encoder waits
for. Workers are forked on Linux (they start in milliseconds: no imports) and
spawned elsewhere.
"""

from __future__ import annotations

import mmap
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recot.video.backends import Backend
from recot.video.decode import (
    SEEK_COST_FRAMES,
    FrameBatch,
    Size,
    _output_size,
    decoded_frame_count,
    default_timeout,
    iter_frames,
    plan_runs,
)
from recot.video.errors import CorruptVideoError, DecodeTimeoutError, PartialDecodeWarning, VideoDecodeError
from recot.video.probe import VideoInfo, probe
from recot.video.sample import SamplePlan, plan_frames

# Pieces per worker a plan is cut into (more: finer load balance and an earlier first batch; fewer: less
# per-piece cost, ~65 ms per piece to open and index an hour-long video).
PIECES_PER_WORKER = 8
# A piece holds at most this many bytes of output frames, but at least MIN_PIECE_FRAMES frames.
PIECE_BYTES = 96 * 2**20
MIN_PIECE_FRAMES = 16
# Pieces submitted but not yet consumed, per worker: one being decoded, one ready.
IN_FLIGHT_PER_WORKER = 2
# How much lower than its parent a worker's CPU priority is (os.nice steps; see _lower_priority).
WORKER_NICENESS = 10
# Below this much estimated single-core decoding time (seconds) one process is used: starting
# workers and shipping frames between processes would cost more than they save.
MIN_PARALLEL_SECONDS = 1.0
# Rough single-core costs behind that estimate (H.264, 2 x86 cores): decoding a frame per
# megapixel of the source, converting and resizing a kept frame per megapixel of output.
_DECODE_SECONDS_PER_MEGAPIXEL = 0.5e-3
_CONVERT_SECONDS_PER_MEGAPIXEL = 20e-3


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def estimated_decode_seconds(plan: SamplePlan, size: Size | None = None) -> float:
    """A rough single-core decoding time for ``plan``: frames to decode x source size + kept frames x output size."""
    info = plan.info
    wanted = np.unique(plan.indices)
    width, height = _output_size(info, size)
    decoded = decoded_frame_count(info, plan_runs(info, wanted)) if info.kind == "video" else len(wanted)
    return (
        decoded * info.width * info.height / 1e6 * _DECODE_SECONDS_PER_MEGAPIXEL
        + len(wanted) * width * height / 1e6 * _CONVERT_SECONDS_PER_MEGAPIXEL
    )


def default_decode_workers(plan: SamplePlan, size: Size | None = None) -> int:
    """Worker processes for decoding ``plan``: every core for a long video, 1 for a short one (or an image)."""
    cores = available_cores()
    if plan.info.kind != "video" or cores < 2 or estimated_decode_seconds(plan, size) < MIN_PARALLEL_SECONDS:
        return 1
    return cores


@dataclass(frozen=True)
class DecodePiece:
    """A contiguous share of the planned frames, decoded by one worker.

    ``indices``: the planned frames (sorted, unique) it hands out. ``run``: the
    single-process decode run its first frame belongs to; ``continues_run``: it
    starts inside that run, at the keyframe ``keyframe``, rather than at the
    run's own start. ``lead`` (the keyframe, when it is not planned) and ``tail``
    (the frame before the next piece's keyframe, when that piece continues a run
    and the frame is not planned) are decoded but not handed out.
    """

    indices: np.ndarray
    run: int
    continues_run: bool
    keyframe: int
    lead: int | None = None
    tail: int | None = None

    @property
    def decode_indices(self) -> np.ndarray:
        """The frames the worker decodes: ``indices`` with ``lead`` and ``tail``."""
        extra = [i for i in (self.lead, self.tail) if i is not None]
        return np.unique(np.concatenate([self.indices, np.asarray(extra, dtype=np.int64)]))


def split_plan(info: VideoInfo, wanted: np.ndarray, piece_frames: int) -> tuple[list[DecodePiece], list[np.ndarray]]:
    """Cut the sorted unique ``wanted`` frames into pieces of at least ``piece_frames`` (see the module docstring).

    A piece is longer when no cut point follows soon enough (a dense plan over a
    long GOP). Returns the pieces and the frames of each single-process decode
    run, which a damaged split run is decoded again from.
    """
    if piece_frames < 1:
        raise ValueError(f"piece_frames must be >= 1, got {piece_frames}")
    runs = plan_runs(info, wanted)
    run_of = np.repeat(np.arange(len(runs)), [len(r.indices) for r in runs])
    run_start = np.zeros(len(wanted), dtype=bool)
    run_start[np.cumsum([0] + [len(r.indices) for r in runs[:-1]])] = True
    keyframes = info.keyframes
    keyframe_of = keyframes[np.searchsorted(keyframes, wanted, side="right") - 1]
    # Cut before position i where a run starts, or where a keyframe lies in (wanted[i-1], wanted[i]].
    can_cut = run_start.copy()
    can_cut[1:] |= keyframe_of[1:] > wanted[:-1]
    can_cut[0] = False
    cuts = [0]
    for position in np.flatnonzero(can_cut).tolist():
        if position - cuts[-1] >= piece_frames:
            cuts.append(position)
    cuts.append(len(wanted))

    pieces: list[DecodePiece] = []
    for start, stop in zip(cuts[:-1], cuts[1:], strict=False):
        continues = bool(start > 0 and not run_start[start])
        keyframe = int(keyframe_of[start])
        lead = keyframe if continues and keyframe != wanted[start] else None
        tail = None
        if stop < len(wanted) and not run_start[stop]:
            before_next = int(keyframe_of[stop]) - 1
            tail = before_next if before_next != wanted[stop - 1] else None
        pieces.append(DecodePiece(wanted[start:stop], int(run_of[start]), continues, keyframe, lead, tail))
    return pieces, [r.indices for r in runs]


def piece_frames_for(info: VideoInfo, size: Size | None, num_frames: int, workers: int) -> int:
    """Frames per piece: ``num_frames`` shared into ``PIECES_PER_WORKER`` pieces per worker, capped at
    ``PIECE_BYTES`` of output frames, but at least ``MIN_PIECE_FRAMES``."""
    width, height = _output_size(info, size)
    share = -(-num_frames // (workers * PIECES_PER_WORKER))
    return max(MIN_PIECE_FRAMES, min(share, PIECE_BYTES // (width * height * 3)))


def iter_frames_parallel(
    path: str | Path,
    plan: SamplePlan | None = None,
    batch_size: int = 32,
    size: Size | None = None,
    *,
    workers: int | None = None,
    timeout: float | None = None,
    backend: Backend = "auto",
) -> Iterator[FrameBatch]:
    """:func:`recot.video.iter_frames`, decoded by ``workers`` processes (see the module docstring).

    Same arguments and the same batches as ``iter_frames``. ``workers=None``
    picks :func:`default_decode_workers`; with 1 worker, for images and frame
    directories, or when the plan makes only one piece, this is ``iter_frames``
    itself. ``timeout`` bounds the time spent waiting for decoded frames (and
    each worker's decoding). Frames that cannot be decoded are left out with one
    ``PartialDecodeWarning``; ``CorruptVideoError`` if none decodes.
    """
    if plan is None:
        plan = plan_frames(probe(path))
    info = plan.info
    if Path(path).resolve() != Path(info.path).resolve():
        raise ValueError(f"the plan was made for {info.path}, not {path}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    workers = default_decode_workers(plan, size) if workers is None else workers
    wanted, repeats = np.unique(plan.indices, return_counts=True)
    pieces: list[DecodePiece] = []
    if workers > 1 and info.kind == "video":
        piece_frames = piece_frames_for(info, size, len(wanted), workers)
        pieces, runs = split_plan(info, wanted, piece_frames)
    if len(pieces) < 2:
        yield from iter_frames(path, plan, batch_size, size, timeout=timeout, backend=backend)
        return
    workers = min(workers, len(pieces))
    seconds = default_timeout(info) if timeout is None else timeout
    width, height = _output_size(info, size)
    in_flight_limit = IN_FLIGHT_PER_WORKER * workers
    context = _context()
    # Forked workers write frames straight into memory shared with this process (created before the fork);
    # spawned ones send them back pickled.
    slots = _FrameSlots(in_flight_limit, piece_frames + piece_frames // 2 + 2, height, width) if context.get_start_method() == "fork" else None
    decoder = _PieceDecoder(info, size, backend, seconds, threads=max(1, available_cores() // workers))
    batcher = _Batcher(info, batch_size, dict(zip(wanted.tolist(), repeats.tolist(), strict=False)), (height, width, 3))
    damage: list[str] = []
    decoded = 0
    waited = 0.0
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a multi-threaded process; the workers only run PyAV and NumPy
        # (PyTorch's DataLoader forks its workers from such processes the same way).
        warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
        pool = _Workers(context, workers, decoder, slots, info.path)
    finished = False
    try:
        in_flight: deque[tuple[int, DecodePiece, int | None]] = deque()
        queued = enumerate(pieces)
        redone_run, redone_until = -1, -1  # a damaged split run decoded again, up to this frame
        previous: DecodePiece | None = None
        state_ok = True  # the previous piece ended where the single-process decoder would be
        while True:
            while len(in_flight) < in_flight_limit and (item := next(queued, None)) is not None:
                number, piece = item
                slot = slots.take(len(piece.decode_indices)) if slots is not None else None
                pool.submit(number, piece.decode_indices, slot)
                in_flight.append((number, piece, slot))
            if not in_flight:
                break
            number, piece, slot = in_flight.popleft()
            started = time.monotonic()
            result = pool.result(number, timeout=max(0.0, seconds - waited))
            if result is None:
                at = info.frame_times[piece.indices[0]]
                raise DecodeTimeoutError(info.path, f"decoding exceeded its {seconds:.0f} s budget near {at:.2f} s of video")
            waited += time.monotonic() - started
            result.raise_error()
            indices = result.indices
            frames = result.frames if slot is None else slots.frames(slot, len(indices))
            if piece.run == redone_run:  # its frames up to redone_until came from the run decoded again
                keep = indices > redone_until
                indices, frames = indices[keep], frames[keep]
            elif piece.continues_run and not (state_ok and len(indices) and indices[0] == piece.keyframe):
                # Damage around the cut: decode the rest of the run as the single-process decoder does, from
                # the last point where its state is known (the previous piece's start in this run).
                run = runs[piece.run]
                redone_run, redone_until = piece.run, int(run[-1])
                assert previous is not None  # a piece that continues a run is never the first
                # (A keyframe within SEEK_COST_FRAMES of the start is reached by decoding from the start.)
                resumable = previous.run == piece.run and previous.keyframe > SEEK_COST_FRAMES
                restart = previous.keyframe if resumable else run[0]
                for batch in _decode_exactly(info, run[run >= restart], size, backend, seconds, damage):
                    keep = batch.indices >= piece.indices[0]
                    decoded += int(keep.sum())
                    yield from batcher.add(batch.frames[keep], batch.indices[keep])
                keep = indices > redone_until
                indices, frames = indices[keep], frames[keep]
            if result.damage is not None:
                damage.append(result.damage)
            state_ok = result.damage is None and (piece.tail is None or piece.tail in result.indices)
            handed_out = np.isin(indices, piece.indices)
            decoded += int(handed_out.sum())
            yield from batcher.add(frames[handed_out], indices[handed_out])
            if slot is not None:
                slots.release(slot)
            previous = piece
        finished = True
    finally:
        pool.close(finished)
    yield from batcher.finish()
    _report_damage(info, wanted, decoded, damage)


# ----- the consumer's side ---------------------------------------------------------
class _Batcher:
    """Turns decoded frames (ascending, unique) into batches of ``batch_size``, planned repeats included.

    Each frame is copied once, straight into the batch being filled, so the
    caller's batches never point into a piece's shared memory.
    """

    def __init__(self, info: VideoInfo, batch_size: int, repeat_of: dict[int, int], frame_shape: tuple[int, ...]) -> None:
        self.info, self.batch_size, self.repeat_of, self.frame_shape = info, batch_size, repeat_of, frame_shape
        self.frames = np.empty((batch_size, *frame_shape), dtype=np.uint8)
        self.indices: list[int] = []

    def add(self, frames: np.ndarray, indices: np.ndarray) -> Iterator[FrameBatch]:
        for rgb, index in zip(frames, indices.tolist(), strict=True):
            for _ in range(self.repeat_of[index]):
                self.frames[len(self.indices)] = rgb
                self.indices.append(index)
                if len(self.indices) == self.batch_size:
                    yield self._take()

    def finish(self) -> Iterator[FrameBatch]:
        if self.indices:
            yield self._take()

    def _take(self) -> FrameBatch:
        n = len(self.indices)
        indices = np.asarray(self.indices, dtype=np.int64)
        batch = FrameBatch(self.frames[:n], indices, self.info.frame_times[indices].astype(np.float64))
        self.frames = np.empty((self.batch_size, *self.frame_shape), dtype=np.uint8)
        self.indices = []
        return batch


class _FrameSlots:
    """Memory shared with forked workers: ``count`` slots of ``frames`` RGB frames, one per piece in flight.

    An anonymous shared mapping, created before the workers are forked, so they
    inherit it: a worker writes a piece's frames into its slot and only the
    frame indices travel back through the pool. Pieces larger than a slot are
    sent back pickled instead.
    """

    def __init__(self, count: int, frames: int, height: int, width: int) -> None:
        self.buffer = mmap.mmap(-1, count * frames * height * width * 3)
        self.array = np.frombuffer(self.buffer, dtype=np.uint8).reshape(count, frames, height, width, 3)
        self.free = list(range(count))

    def take(self, num_frames: int) -> int | None:
        """A free slot for a piece of ``num_frames`` frames (None: too large, send it pickled)."""
        return self.free.pop() if num_frames <= self.array.shape[1] else None

    def frames(self, slot: int, num_frames: int) -> np.ndarray:
        return self.array[slot, :num_frames]

    def release(self, slot: int) -> None:
        self.free.append(slot)


def _report_damage(info: VideoInfo, wanted: np.ndarray, decoded: int, damage: list[str]) -> None:
    """Warn about planned frames that did not decode (one warning for the whole plan); raise if none did."""
    missing = len(wanted) - decoded
    if missing == 0:
        return
    cause = f" ({damage[0]})" if damage else ""
    if decoded == 0:
        raise CorruptVideoError(info.path, f"none of the {len(wanted)} planned frames could be decoded{cause}")
    warnings.warn(
        f"{info.path}: {missing} of {len(wanted)} planned frames could not be decoded{cause}",
        PartialDecodeWarning,
        stacklevel=3,
    )


def _decode_exactly(
    info: VideoInfo, run: np.ndarray, size: Size | None, backend: Backend, seconds: float, damage: list[str]
) -> Iterator[FrameBatch]:
    """Decode one run's frames in this process, exactly as the single-process decoder does, batch by batch.

    Its warning about frames that did not decode (or its error when none did) becomes an entry of ``damage``.
    """
    plan = SamplePlan(info=info, indices=run, timestamps=info.frame_times[run].astype(np.float64), rule="run")
    width, height = _output_size(info, size)
    batches = iter_frames(info.path, plan, batch_size=_worker_batch(width, height), size=size, timeout=seconds, backend=backend)
    while True:
        # Warnings are caught around each step only: the caller runs between the batches.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PartialDecodeWarning)
            try:
                batch = next(batches, None)
            except CorruptVideoError as e:
                damage.append(_cause(e.cause, info.path))
                return
        for w in caught:
            if issubclass(w.category, PartialDecodeWarning):
                damage.append(_cause(str(w.message), info.path))
            else:
                warnings.warn(w.message, w.category, stacklevel=2)
        if batch is None:
            return
        yield batch


def _cause(message: str, path: str) -> str:
    """What the single-process decoder said went wrong, without the file name and its frame counts (they are a
    piece's, not the plan's).

    ``"<path>: decoding stopped after frame 97 at 3.233 s (decoder error: ...); 20 of 32 planned frames, ..."``
    -> ``"decoding stopped after frame 97 at 3.233 s (decoder error: ...)"``; ``"none of the 27 planned frames
    could be decoded (read error: ...)"`` -> ``"read error: ..."``.
    """
    message = message.removeprefix(f"{path}: ")
    if message.startswith("none of the ") and message.endswith(")") and " (" in message:
        return message[message.index(" (") + 2 : -1]
    return message.split("; ", 1)[0]


def _context() -> multiprocessing.context.BaseContext:
    """Fork on Linux (workers inherit the loaded modules and start at once), spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


# ----- the workers' side ----------------------------------------------------------------
@dataclass
class _PieceResult:
    """A piece's decoded ``indices`` (k,) and ``frames`` (k, H, W, 3; None when they were written to a slot);
    ``damage``: why some frames did not decode.

    ``error`` carries a ``VideoDecodeError`` as (class, path, cause): those
    exceptions do not survive pickling between processes as they are.
    """

    indices: np.ndarray
    frames: np.ndarray | None
    damage: str | None = None
    error: tuple[type[VideoDecodeError], str, str] | None = None
    notes: list[tuple[type[Warning], str]] = field(default_factory=list)  # other warnings, shown by the consumer

    def raise_error(self) -> None:
        """Raise the worker's ``VideoDecodeError`` here, if it had one; show its other warnings."""
        for category, message in self.notes:
            warnings.warn(message, category, stacklevel=3)
        self.notes = []
        if self.error is not None:
            cls, path, cause = self.error
            raise cls(path, cause)


@dataclass
class _PieceDecoder:
    """What every worker needs to decode a piece: the video's index and the decoding options."""

    info: VideoInfo
    size: Size | None
    backend: Backend
    seconds: float
    threads: int

    def decode(self, indices: np.ndarray, out: np.ndarray | None = None) -> _PieceResult:
        """Decode ``indices`` (sorted, unique) with the single-process decoder; damage is reported, not raised.

        With ``out`` (at least ``len(indices)`` frames), the frames are written there instead of returned.
        """
        info = self.info
        plan = SamplePlan(info=info, indices=indices, timestamps=info.frame_times[indices].astype(np.float64), rule="piece")
        width, height = _output_size(info, self.size)
        decoded: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        count = 0
        damage = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PartialDecodeWarning)
            try:
                batches = iter_frames(info.path, plan, batch_size=_worker_batch(width, height), size=self.size,
                                      timeout=self.seconds, threads=self.threads, backend=self.backend)  # fmt: skip
                for batch in batches:
                    if out is not None:
                        out[count : count + len(batch)] = batch.frames
                    else:
                        parts.append(batch.frames)
                    decoded.append(batch.indices)
                    count += len(batch)
            except CorruptVideoError as e:  # nothing in this piece decodes
                damage = _cause(e.cause, info.path)
            except VideoDecodeError as e:
                empty = np.empty(0, dtype=np.int64)
                return _PieceResult(empty, None, error=(type(e), e.path, e.cause))
        partial = [w for w in caught if issubclass(w.category, PartialDecodeWarning)]
        notes = [(w.category, str(w.message)) for w in caught if w not in partial]
        if partial:
            damage = _cause(str(partial[0].message), info.path)
        frames = None
        if out is None:
            frames = np.concatenate(parts) if parts else np.empty((0, height, width, 3), dtype=np.uint8)
        found = np.concatenate(decoded) if decoded else np.empty(0, dtype=np.int64)
        return _PieceResult(found, frames, damage, notes=notes)


# Bytes of frames per batch inside a worker (the piece's memory is written batch by batch); small enough for
# malloc to reuse its memory rather than map fresh pages for every batch.
_WORKER_BATCH_BYTES = 4 * 2**20


def _worker_batch(width: int, height: int) -> int:
    """Frames per batch of the single-process decoder inside a piece: ``_WORKER_BATCH_BYTES``, 1 to 32 frames."""
    return max(1, min(32, _WORKER_BATCH_BYTES // (width * height * 3)))


class _Workers:
    """``count`` decoding processes, each with its own pipe; piece number ``k`` goes to worker ``k % count``.

    Each worker decodes its pieces in the order they arrive, so the next result
    on a worker's pipe is always its oldest piece's. Not ``multiprocessing.Pool``:
    stopping a Pool early (``terminate``) from a background thread deadlocked in
    its task-handler thread about once in a hundred early stops; here nothing is
    shared but one pipe per worker, and stopping early is a kill.
    """

    def __init__(
        self, context: multiprocessing.context.BaseContext, count: int, decoder: _PieceDecoder,
        slots: _FrameSlots | None, path: str,
    ) -> None:  # fmt: skip
        self.path = path
        self.workers: list[tuple[multiprocessing.process.BaseProcess, multiprocessing.connection.Connection]] = []
        try:
            for _ in range(count):
                ours, theirs = context.Pipe()
                process = context.Process(target=_worker_main, args=(theirs, decoder, slots), daemon=True)
                process.start()
                theirs.close()
                self.workers.append((process, ours))
        except BaseException:
            self.close(finished=False)
            raise

    def submit(self, number: int, indices: np.ndarray, slot: int | None) -> None:
        """Hand piece ``number`` (its frames ``indices``, its shared-memory ``slot``) to its worker."""
        self.workers[number % len(self.workers)][1].send((indices, slot))

    def result(self, number: int, timeout: float) -> _PieceResult | None:
        """Piece ``number``'s result (its worker's oldest), or None after ``timeout`` seconds."""
        process, pipe = self.workers[number % len(self.workers)]
        try:
            if not pipe.poll(timeout):
                return None
            result = pipe.recv()
        except (EOFError, OSError):
            process.join(timeout=1.0)
            raise VideoDecodeError(self.path, f"a decoding worker process died (exit code {process.exitcode})") from None
        if isinstance(result, Exception):
            raise result
        return result

    def close(self, finished: bool) -> None:
        """Stop the workers: asked to exit when every piece was read (``finished``), killed otherwise."""
        if finished:
            for _, pipe in self.workers:
                try:
                    pipe.send(None)
                except OSError:
                    pass
        for process, pipe in self.workers:
            if finished:
                process.join(timeout=5.0)
            if process.is_alive():
                process.kill()
            process.join()
            pipe.close()
        self.workers = []


_worker_decoder: _PieceDecoder | None = None
_worker_slots: _FrameSlots | None = None


def _worker_main(pipe: multiprocessing.connection.Connection, decoder: _PieceDecoder, slots: _FrameSlots | None) -> None:
    """A worker process: decode the pieces that arrive on ``pipe`` and send each result back, until None."""
    global _worker_decoder, _worker_slots
    _worker_decoder, _worker_slots = decoder, slots
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    if "torch" in sys.modules:  # forked from a process that runs PyTorch: keep its thread pool out of the child
        sys.modules["torch"].set_num_threads(1)
    _lower_priority()
    while (task := pipe.recv()) is not None:
        indices, slot = task
        try:
            result: _PieceResult | Exception = _decode_piece(indices, slot)
        except Exception as e:  # noqa: BLE001  (a bug, not damage: the consumer raises it)
            result = RuntimeError(f"decoding worker failed: {type(e).__name__}: {e}")
        pipe.send(result)


def _lower_priority() -> None:
    """Run this worker ``WORKER_NICENESS`` steps below its parent's CPU priority (where the OS has ``nice``).

    The decoders exist to feed the parent's encoder. When both want every core,
    an encoder thread that waits for a core its own feeders hold stalls the
    other encoder threads at their next barrier, which spin meanwhile: on 2
    cores, decoding with 2 workers beside encoding with 2 threads cost a fifth
    more CPU time than decoding and encoding apart. At a lower priority the
    decoders take what the encoder leaves, so nothing is lost when the encoder
    waits for frames.
    """
    if hasattr(os, "nice"):
        try:
            os.nice(WORKER_NICENESS)
        except OSError:  # not permitted here: same priority, same frames
            pass


def _decode_piece(indices: np.ndarray, slot: int | None) -> _PieceResult:
    assert _worker_decoder is not None, "worker not initialised"
    out = None if slot is None or _worker_slots is None else _worker_slots.array[slot]
    return _worker_decoder.decode(indices, out)
