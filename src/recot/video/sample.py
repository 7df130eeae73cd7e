"""Which frames to read: the sampling rules, over true presentation times.

Rules (pick at most one of ``num_frames`` / ``fps``):

* ``num_frames=N``: the released Video-XL-Pro rule, ``floor(linspace(0, total-1, N))``
  over the frames in range. When N exceeds the frames available, every frame is
  taken once and a ``FrameCountCappedWarning`` says so (the released model
  repeats frames to make up N, which only duplicates work and tokens).
* ``fps=F``: the frame on screen at ``start + k/F`` for k = 0, 1, ... (the last
  frame whose presentation time is <= that instant), duplicates removed; correct
  for variable frame rate because it uses the frames' real times. Above the
  video's own rate this is every frame once.
* neither: every frame in range.

``max_frames=M`` then caps the plan, keeping ``floor(linspace(0, len-1, M))`` of it
(the training rule: uniform when over the cap). ``start``/``end`` (seconds since
the video's start) restrict the frames to ``start <= t < end``; an ``end`` past the
video is clamped, a range that holds no frame raises ``VideoRangeError``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from recot.video.errors import FrameCountCappedWarning, VideoRangeError
from recot.video.probe import VideoInfo

# Float slack when comparing times computed from integer pts (rounding, not frame jitter).
_TIME_EPS = 1e-6


@dataclass(frozen=True)
class SamplePlan:
    """Planned frames: presentation-order ``indices`` (non-decreasing) and their ``timestamps`` in seconds."""

    info: VideoInfo = field(repr=False)
    indices: np.ndarray
    timestamps: np.ndarray
    rule: str

    def __len__(self) -> int:
        return len(self.indices)


def plan_frames(
    info: VideoInfo,
    num_frames: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    start: float | None = None,
    end: float | None = None,
) -> SamplePlan:
    """Plan which frames of ``info`` to read; see the module docstring for the rules.

    ``info`` must come from ``probe(path, index=True)`` (the default). Raises
    ``ValueError`` naming the parameter for a bad ``num_frames``/``fps``/``max_frames``,
    ``VideoRangeError`` for a range that holds no frame.
    """
    if not info.indexed:
        raise ValueError(f"{info.path}: plan_frames needs frame times; probe it with index=True")
    if num_frames is not None and fps is not None:
        raise ValueError("give num_frames or fps, not both")
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fps is not None and not 0 < fps < float("inf"):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")

    times = info.frame_times
    lo, hi = _frames_in_range(info, start, end)
    if num_frames is not None and num_frames > hi - lo:
        where = "the video" if start is None and end is None else f"[{times[lo]:.3f}, {times[hi - 1]:.3f}] s"
        warnings.warn(
            f"{info.path}: asked for {num_frames} frames but {where} holds {hi - lo}; using each of them once",
            FrameCountCappedWarning,
            stacklevel=2,
        )
        indices = np.arange(lo, hi, dtype=np.int64)
        rule = f"all {hi - lo} frames (asked for {num_frames})"
    elif num_frames is not None:
        indices = lo + np.floor(np.linspace(0, hi - lo - 1, num_frames)).astype(np.int64)
        rule = f"uniform {num_frames}"
    elif fps is not None:
        t0 = start if start is not None else 0.0
        t1 = info.duration if end is None else min(end, info.duration)
        instants = t0 + np.arange(max(1, int(np.ceil((t1 - t0) * fps - _TIME_EPS)))) / fps
        on_screen = np.searchsorted(times, instants + _TIME_EPS, side="right") - 1
        indices = np.unique(np.clip(on_screen, lo, hi - 1)).astype(np.int64)
        rule = f"{fps:g} fps"
    else:
        indices = np.arange(lo, hi, dtype=np.int64)
        rule = "all frames"
    if max_frames is not None and len(indices) > max_frames:
        indices = indices[np.floor(np.linspace(0, len(indices) - 1, max_frames)).astype(np.int64)]
        rule += f", capped uniformly at {max_frames}"
    if start is not None or end is not None:
        rule += f", range [{times[lo]:.3f}, {times[hi - 1]:.3f}] s"
    return SamplePlan(info=info, indices=indices, timestamps=times[indices].astype(np.float64), rule=rule)


def _frames_in_range(info: VideoInfo, start: float | None, end: float | None) -> tuple[int, int]:
    """The half-open index range of frames with ``start <= t < end``."""
    times = info.frame_times
    if start is None and end is None:
        return 0, len(times)
    t0 = 0.0 if start is None else float(start)
    t1 = info.duration if end is None else min(float(end), info.duration)
    if t0 < 0:
        raise VideoRangeError(info.path, f"start {t0:g} s is negative")
    if end is not None and end <= t0:
        raise VideoRangeError(info.path, f"end {end:g} s is not after start {t0:g} s")
    if t0 >= info.duration and not info.is_image:
        raise VideoRangeError(info.path, f"start {t0:g} s is past the end of the video ({info.duration:.3f} s)")
    lo = int(np.searchsorted(times, t0 - _TIME_EPS, side="left"))
    hi = int(np.searchsorted(times, t1 - _TIME_EPS, side="left")) if not info.is_image else 1
    if hi <= lo:
        raise VideoRangeError(info.path, f"no frame lies in [{t0:g}, {t1:g}) s (video is {info.duration:.3f} s)")
    return lo, hi
