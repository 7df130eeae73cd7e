"""Decoding backends: PyAV (always available) and torchcodec (optional, used where it is faster).

torchcodec loads when it is installed with system FFmpeg 4-7 shared libraries
and a build that matches torch; with this project's CPU torch that is
``torchcodec==0.13.0`` (the 0.14+ PyPI wheels link CUDA and fail to load).

``backend="auto"`` uses torchcodec only where it measured faster than the PyAV
path: native-size output (no ``size``, or the video's own size) from a stream
without B-frames. Elsewhere PyAV wins: it skips decoding non-reference frames
that are not wanted, and it converts and resizes in one swscale call, whereas
torchcodec decodes every frame up to a wanted one and resizing its RGB output
costs more than decoding (H.264 720p, 2 cores, 1024 of 1800 frames: no
B-frames native 2.4 s vs 3.0 s PyAV; B-frames native 4.2 s vs 3.7 s; resized to
384 9.4-11.3 s vs 3.6-4.4 s). Images and directories of frames are read with
PIL. If torchcodec fails on a file part-way, or returns a frame whose pts
differs from the probe's index, "auto" finishes the file with PyAV;
``backend="torchcodec"`` raises instead.

Same frames: torchcodec is handed the probe's frame index (each frame's pts,
duration and keyframe flag, as ``custom_frame_mappings``), so frame ``i`` is the
same frame in both backends and no second scan of the file is needed; every
returned frame's pts is checked against the index. Timestamps come from the
index in both backends.

Pixels: at native size torchcodec's RGB frames equal PyAV's exactly (every
fixture codec, including rotation). With ``size``, torchcodec's native RGB
frames are resized by swscale bicubic, whereas PyAV converts and resizes in a
single swscale call that resamples the chroma planes at their own resolution.
The results differ slightly: mean absolute difference 1-2 levels, 99th
percentile about 10, up to about 100 on sharp saturated colour edges.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any, Literal

import av
import numpy as np

from recot.video.budget import DecodeBudget
from recot.video.errors import UnsupportedVideoError
from recot.video.probe import VideoInfo

Backend = Literal["auto", "pyav", "torchcodec"]
BACKENDS: tuple[str, ...] = ("auto", "pyav", "torchcodec")
# Frames asked of torchcodec per call: the granularity of the time-budget check.
# The decoder keeps its position between calls, so small chunks cost no extra seeks.
CHUNK_FRAMES = 8
# torchcodec prefixes its errors with "function, /build/path/File.cpp:123, ".
_SOURCE_LOCATION = re.compile(r"^\w+, \S+:\d+, ")


class BackendFailure(Exception):
    """torchcodec failed on a file or disagreed with the probe's frame index."""


@functools.cache
def _load_torchcodec() -> tuple[Any, str]:
    """``(VideoDecoder class, "")`` if torchcodec imports and loads, else ``(None, reason)``."""
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as e:  # noqa: BLE001  (ImportError, or OSError/RuntimeError when its libraries fail to load)
        return None, f"{type(e).__name__}: {_reason(e)}"
    return VideoDecoder, ""


def _reason(error: Exception) -> str:
    """The last line of an exception's message, without torchcodec's source location."""
    text = str(error).strip()
    return _SOURCE_LOCATION.sub("", text.splitlines()[-1]) if text else type(error).__name__


def torchcodec_available() -> bool:
    """True when torchcodec imports and its FFmpeg libraries load on this machine."""
    return _load_torchcodec()[0] is not None


def choose_backend(
    info: VideoInfo, backend: str, out_size: tuple[int, int] | None = None
) -> Literal["pyav", "torchcodec", "pil"]:
    """The backend that will decode ``info`` to ``out_size`` (width, height; ``None`` = native).

    ``"pil"`` for images/frame directories; for ``"auto"`` see the module docstring.

    Raises ``ValueError`` for an unknown name or ``backend="torchcodec"`` on a
    non-video input, ``ImportError`` for ``backend="torchcodec"`` when torchcodec
    does not load, ``UnsupportedVideoError`` for ``backend="torchcodec"`` on a
    stream whose frames can only be numbered by decoding from the start
    (``VideoInfo.sequential_only``): torchcodec finds frames by their pts, which
    such files do not store in display order.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if info.kind != "video":
        if backend == "torchcodec":
            raise ValueError(f"{info.path}: the torchcodec backend reads video files, not a {info.kind} input")
        return "pil"
    if backend == "pyav":
        return "pyav"
    if backend == "torchcodec":
        if info.sequential_only:
            raise UnsupportedVideoError(info.path, "the torchcodec backend cannot read it: its frames' timestamps are "
                                        "not in display order (H.264/HEVC B-frames in AVI, or packed B-frames); "
                                        "backend='pyav' or 'auto' can")
        if not torchcodec_available():
            raise ImportError(f"backend='torchcodec' but torchcodec does not load ({_load_torchcodec()[1]})")
        return "torchcodec"
    native = out_size is None or out_size == (info.width, info.height)
    fits = native and not info.has_b_frames and not info.sequential_only
    return "torchcodec" if fits and torchcodec_available() else "pyav"


def frame_mappings(info: VideoInfo) -> str:
    """The probe's frame index as torchcodec ``custom_frame_mappings`` JSON (pts, duration, key_frame)."""
    pts = info.frame_pts
    last = max(1, round((info.duration - float(info.frame_times[-1])) / info.time_base))
    durations = np.diff(pts, append=pts[-1] + last)
    key = np.zeros(len(pts), dtype=np.int64)
    key[info.keyframes] = 1
    rows = zip(pts.tolist(), durations.tolist(), key.tolist(), strict=False)
    frames = [{"pts": p, "duration": d, "key_frame": k} for p, d, k in rows]
    return json.dumps({"frames": frames})


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 (H, W, 3) frame to ``size`` = (width, height) with swscale bicubic."""
    if (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="BICUBIC").to_ndarray()


def iter_torchcodec(
    info: VideoInfo, wanted: np.ndarray, out_size: tuple[int, int], budget: DecodeBudget, threads: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, rgb)`` for each of the sorted unique ``wanted`` frames, decoded by torchcodec.

    Raises ``BackendFailure`` when torchcodec errors or a frame's pts or size
    disagrees with the probe; frames yielded before that are correct.
    """
    video_decoder, reason = _load_torchcodec()
    if video_decoder is None:
        raise BackendFailure(reason)
    tb = float(info.time_base)
    try:
        decoder = video_decoder(
            info.path, stream_index=info.stream_index, dimension_order="NHWC",
            num_ffmpeg_threads=threads, custom_frame_mappings=frame_mappings(info),
        )
    except Exception as e:
        raise BackendFailure(f"torchcodec cannot open it ({_reason(e)})") from e
    for start in range(0, len(wanted), CHUNK_FRAMES):
        chunk = wanted[start : start + CHUNK_FRAMES]
        budget.check(info.frame_times[chunk[0]])
        try:
            batch = decoder.get_frames_at(chunk.tolist())
        except Exception as e:  # torchcodec raises RuntimeError for decode and seek failures
            t0, t1 = info.frame_times[chunk[0]], info.frame_times[chunk[-1]]
            raise BackendFailure(f"torchcodec failed on the frames at {t0:.3f}-{t1:.3f} s ({_reason(e)})") from e
        frames, pts_seconds = batch.data.numpy(), batch.pts_seconds.numpy()
        expected = info.frame_pts[chunk] * tb
        if len(frames) != len(chunk) or np.any(np.abs(pts_seconds - expected) > 0.25 * tb):
            got = np.round(pts_seconds / tb).astype(np.int64).tolist()
            raise BackendFailure(f"torchcodec returned pts {got} for frames {chunk.tolist()} "
                                 f"(the index says {info.frame_pts[chunk].tolist()})")
        if frames.shape[1:3] != (info.height, info.width):
            raise BackendFailure(f"torchcodec frames are {frames.shape[2]}x{frames.shape[1]}, "
                                 f"the probe says {info.width}x{info.height}")
        for index, rgb in zip(chunk.tolist(), frames, strict=False):
            rgb = resize_rgb(rgb, out_size)
            budget.pause()
            yield index, rgb
            budget.resume()
