"""Stream planned frames out of a video in bounded-memory batches.

Decoding strategy: the planned frames are split into *runs*. A run starts with
a seek to the keyframe before its first frame and then decodes straight
through its frames. A new run (a seek) starts only when the keyframe before
the next wanted frame lies more than ``SEEK_COST_FRAMES`` past where straight
decoding would be, i.e. when seeking is estimated to cost fewer decoded frames
than continuing. Dense plans and long GOPs therefore become one sequential
pass; sparse plans over short GOPs jump from keyframe to keyframe.

While decoding, packets that hold no wanted frame are decoded with
``skip_frame=NONREF``: frames that no other frame references are then skipped
by the decoder, and only wanted or reference frames cost decoding time.
Frames are converted to RGB and resized in one swscale call (bicubic).

Frames are matched to the probe's index by their pts. Streams whose pts do not
follow display order (``VideoInfo.sequential_only``: H.264/HEVC B-frames in
AVI, packed B-frames) are instead decoded in one pass from the start, every
frame decoded, and numbered by output position, the same numbering as a plain
sequential decode. Sparse plans on such files cost a decode up to their last
frame.

That is the PyAV backend; ``backend="auto"`` uses torchcodec instead when it is
installed and faster (see ``recot.video.backends``): same frames and timestamps.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from recot.video.backends import (
    Backend,
    BackendFailure,
    choose_backend,
    iter_torchcodec,
)
from recot.video.budget import DecodeBudget
from recot.video.errors import (
    CorruptVideoError,
    PartialDecodeWarning,
    UnsupportedVideoError,
)
from recot.video.probe import VideoInfo, ffmpeg_reason, open_container, open_image, probe, video_stream
from recot.video.sample import SamplePlan, plan_frames

# A seek (demuxer seek, decoder flush, refilling the frame-threaded decoder) costs
# roughly as much as decoding this many frames.
SEEK_COST_FRAMES = 16
# Consecutive undecodable packets after which the rest of a run is given up.
MAX_DECODE_ERRORS = 8

Size = int | tuple[int, int]


@dataclass
class FrameBatch:
    """Decoded frames: ``frames`` uint8 RGB (B, H, W, 3), their ``indices`` and ``timestamps`` (seconds)."""

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def concat(cls, batches: Sequence[FrameBatch]) -> FrameBatch:
        """Join batches in order."""
        return cls(
            frames=np.concatenate([b.frames for b in batches]),
            indices=np.concatenate([b.indices for b in batches]),
            timestamps=np.concatenate([b.timestamps for b in batches]),
        )


@dataclass(frozen=True)
class DecodeRun:
    """One seek (to keyframe ``seek_to``; ``None`` = start of file, no seek) then straight decoding of ``indices``."""

    seek_to: int | None
    indices: np.ndarray


def plan_runs(info: VideoInfo, indices: np.ndarray) -> list[DecodeRun]:
    """Split sorted unique frame ``indices`` into decode runs by estimated cost (see module docstring).

    A ``sequential_only`` stream gets one run from the start of the file.
    """
    if info.sequential_only:
        return [DecodeRun(None, np.asarray(indices, dtype=np.int64))]
    keyframes = info.keyframes
    runs: list[DecodeRun] = []
    current: list[int] = []
    seek_to: int | None = None
    next_decoded = 0  # the frame straight decoding would produce next
    for index in indices.tolist():
        keyframe = int(keyframes[np.searchsorted(keyframes, index, side="right") - 1])
        if keyframe - next_decoded > SEEK_COST_FRAMES:
            if current:
                runs.append(DecodeRun(seek_to, np.asarray(current, dtype=np.int64)))
            current, seek_to = [], keyframe
        current.append(index)
        next_decoded = index + 1
    if current:
        runs.append(DecodeRun(seek_to, np.asarray(current, dtype=np.int64)))
    return runs


def decoded_frame_count(info: VideoInfo, runs: list[DecodeRun]) -> int:
    """Frames the runs decode at most (before non-reference skipping): the cost the planner minimises."""
    return sum(int(run.indices[-1]) + 1 - (run.seek_to or 0) for run in runs)


def default_timeout(info: VideoInfo) -> float:
    """A generous decode-time budget: 60 s plus 5 ms per frame of the video per 720p worth of pixels."""
    megapixels = info.width * info.height / (1280 * 720)
    return 60.0 + 0.005 * info.num_frames * max(1.0, megapixels)


def iter_frames(
    path: str | Path,
    plan: SamplePlan | None = None,
    batch_size: int = 32,
    size: Size | None = None,
    *,
    timeout: float | None = None,
    threads: int = 0,
    backend: Backend = "auto",
) -> Iterator[FrameBatch]:
    """Yield the planned frames of ``path`` in batches of ``batch_size`` (the last may be smaller).

    ``plan`` defaults to every frame. ``size`` resizes each frame straight to
    ``size x size`` (or ``(width, height)``), bicubic, aspect not kept; rotation
    metadata is applied. Memory is bounded by ``batch_size``. ``timeout`` bounds
    the seconds spent decoding (not the caller's time between batches);
    default: ``default_timeout``. ``threads=0`` lets FFmpeg use every core.

    Frames that cannot be decoded (damaged data) are left out with a
    ``PartialDecodeWarning`` saying where decoding stopped; if no planned frame
    decodes at all, ``CorruptVideoError`` is raised.

    ``backend``: ``"auto"`` decodes with torchcodec where it is installed and
    faster (native size, no B-frames), else PyAV; ``"pyav"`` / ``"torchcodec"``
    force one (forced torchcodec raises instead of falling back to PyAV); see
    ``recot.video.backends``. Both give the same frames and timestamps; resized
    pixels differ slightly.
    """
    if plan is None:
        info = probe(path)
        plan = plan_frames(info)
    info = plan.info
    if Path(path).resolve() != Path(info.path).resolve():
        raise ValueError(f"the plan was made for {info.path}, not {path}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out_size = _output_size(info, size)
    chosen = choose_backend(info, backend, out_size)
    budget = DecodeBudget(info.path, default_timeout(info) if timeout is None else timeout)
    wanted, repeats = np.unique(plan.indices, return_counts=True)
    repeat_of = dict(zip(wanted.tolist(), repeats.tolist(), strict=False))

    if chosen == "torchcodec":
        source = _decode_video_torchcodec(info, wanted, out_size, budget, threads, strict=backend == "torchcodec")
    elif chosen == "pyav":
        source = _decode_video(info, wanted, out_size, budget, threads)
    else:
        source = _decode_images(info, wanted, out_size, budget)

    frames: list[np.ndarray] = []
    indices: list[int] = []
    for index, rgb in source:
        for _ in range(repeat_of[index]):
            frames.append(rgb)
            indices.append(index)
        while len(indices) >= batch_size:
            budget.pause()
            yield _batch(info, frames[:batch_size], indices[:batch_size])
            budget.resume()
            del frames[:batch_size], indices[:batch_size]
    if indices:
        yield _batch(info, frames, indices)


def read_frames(
    path: str | Path,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
    size: Size | None = None,
    *,
    timeout: float | None = None,
    backend: Backend = "auto",
) -> FrameBatch:
    """Probe, plan and decode in one call, returning every planned frame at once (see ``plan_frames``)."""
    plan = plan_frames(probe(path), num_frames=num_frames, fps=fps, max_frames=max_frames, start=start, end=end)
    batches = iter_frames(path, plan, batch_size=max(1, len(plan)), size=size, timeout=timeout, backend=backend)
    return FrameBatch.concat(list(batches))


def _batch(info: VideoInfo, frames: list[np.ndarray], indices: list[int]) -> FrameBatch:
    idx = np.asarray(indices, dtype=np.int64)
    return FrameBatch(frames=np.stack(frames), indices=idx, timestamps=info.frame_times[idx].astype(np.float64))


def _output_size(info: VideoInfo, size: Size | None) -> tuple[int, int]:
    """(width, height) of the frames handed out, after rotation."""
    if size is None:
        return info.width, info.height
    width, height = (size, size) if isinstance(size, int) else size
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {size}")
    return int(width), int(height)


def _decode_video_torchcodec(
    info: VideoInfo, wanted: np.ndarray, out_size: tuple[int, int], budget: DecodeBudget, threads: int, *, strict: bool
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode with torchcodec; if it fails part-way, PyAV decodes the rest (``strict``: raise instead)."""
    decoded: list[int] = []
    try:
        for index, rgb in iter_torchcodec(info, wanted, out_size, budget, threads):
            decoded.append(index)
            yield index, rgb
    except BackendFailure as e:
        if strict:
            raise UnsupportedVideoError(info.path, f"{e}; backend='pyav' or 'auto' can read it") from e
        yield from _decode_video(info, wanted, out_size, budget, threads, decoded=decoded)


def _decode_video(
    info: VideoInfo,
    wanted: np.ndarray,
    out_size: tuple[int, int],
    budget: DecodeBudget,
    threads: int,
    decoded: list[int] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, rgb)`` for each wanted frame in ascending order, then warn about any that failed.

    ``decoded``: wanted frames another backend already yielded (a prefix of ``wanted``); they are skipped.
    """
    decoded = [] if decoded is None else decoded
    todo = wanted[wanted > decoded[-1]] if decoded else wanted
    index_of_pts = dict(zip(info.frame_pts.tolist(), range(len(info.frame_pts)), strict=False))
    turns = info.rotation // 90
    # swscale resizes before the rotation, so swap the target for quarter turns.
    width, height = out_size[::-1] if turns % 2 else out_size
    failures: list[str] = []
    with open_container(info.path) as container:
        stream = video_stream(container, info.path)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        for run in plan_runs(info, todo):
            if info.sequential_only:
                frames = _decode_in_output_order(container, stream, info, run, budget, failures)
            else:
                frames = _decode_run(container, stream, info, run, index_of_pts, budget, failures)
            for index, frame in frames:
                rgb = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="BICUBIC")
                decoded.append(index)
                yield index, np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
    _report_missing(info, wanted, decoded, failures)


def _decode_run(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: VideoInfo,
    run: DecodeRun,
    index_of_pts: dict[int, int],
    budget: DecodeBudget,
    failures: list[str],
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decode one run, yielding its wanted frames. Re-seeks earlier if a seek overshoots the first frame."""
    ctx = stream.codec_context
    wanted_pts = set(info.frame_pts[run.indices].tolist())
    wanted = set(run.indices.tolist())
    first, last = int(run.indices[0]), int(run.indices[-1])
    seek_to = run.seek_to
    keyframes = info.keyframes
    while True:
        if seek_to is not None:
            container.seek(int(info.frame_pts[seek_to]), stream=stream, backward=True, any_frame=False)
        overshot = False
        seen_any = False
        errors = 0
        try:
            for packet in container.demux(stream):
                budget.check(info.frame_times[first])
                if packet.size == 0 and packet.dts is not None:
                    continue  # an empty packet (AVI "dropped frame" entry) would put the decoder into draining
                ctx.skip_frame = "NONREF" if packet.pts is not None and packet.pts not in wanted_pts else "DEFAULT"
                try:
                    decoded = packet.decode()
                    errors = 0
                except av.error.FFmpegError as e:  # a damaged packet: skip it, give up after several in a row
                    errors += 1
                    if not failures:
                        failures.append(f"decoder error: {ffmpeg_reason(e)}")
                    if errors >= MAX_DECODE_ERRORS:
                        return
                    continue
                for frame in decoded:
                    index = index_of_pts.get(frame.pts)
                    if index is None:
                        continue
                    if not seen_any and index > first and seek_to:
                        overshot = True  # the seek landed after the frame we need
                        break
                    seen_any = True
                    if index in wanted:
                        budget.pause()
                        yield index, frame
                        budget.resume()
                    if index >= last:
                        return
                if overshot:
                    break
        except av.error.FFmpegError as e:  # demuxing failed: the data after this point is unreadable
            failures.append(f"read error: {ffmpeg_reason(e)}")
            return
        if not overshot:
            return  # end of stream
        earlier = int(np.searchsorted(keyframes, seek_to, side="left")) - 1
        seek_to = int(keyframes[earlier]) if earlier >= 0 else 0


def _decode_in_output_order(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    info: VideoInfo,
    run: DecodeRun,
    budget: DecodeBudget,
    failures: list[str],
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Decode from the start of the file, numbering frames by output position (``sequential_only`` streams).

    Output order is display order, so the ``i``-th frame out is frame ``i``. No
    frame may be skipped, and a packet that fails to decode ends the run: the
    frames after it could no longer be numbered with certainty.
    """
    wanted = set(run.indices.tolist())
    last = int(run.indices[-1])
    position = 0
    try:
        for packet in container.demux(stream):
            budget.check(info.frame_times[min(position, last)])
            if packet.size == 0 and packet.dts is not None:
                continue  # an empty packet (AVI "dropped frame" entry) would put the decoder into draining
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:
                failures.append(f"decoder error: {ffmpeg_reason(e)}")
                return
            for frame in decoded:
                index, position = position, position + 1
                if index in wanted:
                    budget.pause()
                    yield index, frame
                    budget.resume()
                if index >= last:
                    return
    except av.error.FFmpegError as e:  # demuxing failed: the data after this point is unreadable
        failures.append(f"read error: {ffmpeg_reason(e)}")


def _report_missing(info: VideoInfo, wanted: np.ndarray, decoded: list[int], failures: list[str]) -> None:
    """Warn about planned frames that did not decode, saying where and why; raise if none did."""
    missing = np.setdiff1d(wanted, decoded)
    if len(missing) == 0:
        return
    if not decoded:
        cause = failures[0] if failures else "the decoder returned no frames"
        raise CorruptVideoError(info.path, f"none of the {len(wanted)} planned frames could be decoded ({cause})")
    last_good = max(decoded)
    times = info.frame_times
    if missing[0] > last_good:  # everything up to a point decoded, nothing after it
        cause = failures[0] if failures else "the decoder returned no further frames"
        message = (f"decoding stopped after frame {last_good} at {times[last_good]:.3f} s ({cause}); "
                   f"{len(missing)} of {len(wanted)} planned frames, from {times[missing[0]]:.3f} s on, are missing")
    else:
        cause = failures[0] if failures else "the decoder returned no picture for them"
        shown = ", ".join(f"{i} ({times[i]:.3f} s)" for i in missing[:5].tolist())
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        message = f"{len(missing)} of {len(wanted)} planned frames are missing ({cause}): frames {shown}{more}"
    warnings.warn(f"{info.path}: {message}", PartialDecodeWarning, stacklevel=4)


def _decode_images(
    info: VideoInfo, wanted: np.ndarray, out_size: tuple[int, int], budget: DecodeBudget
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, rgb)`` for a still image or a directory of frames (EXIF orientation applied)."""
    for index in wanted.tolist():
        budget.check(info.frame_times[index])
        image = ImageOps.exif_transpose(open_image(Path(info.frame_files[index]))).convert("RGB")
        if image.size != out_size:
            image = image.resize(out_size, Image.Resampling.BICUBIC)
        yield index, np.asarray(image)
