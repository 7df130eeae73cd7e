"""Video input: probe files, plan frame samples with true timestamps, stream decoded frames in batches.

Typical use::

    info = probe("movie.mkv")  # no decoding: the frame index (count, times, keyframes)
    plan = plan_frames(info, fps=1, max_frames=1024)  # which frames, with their true timestamps
    for batch in iter_frames("movie.mkv", plan, batch_size=64, size=384):
        batch.frames  # uint8 RGB (B, 384, 384, 3)
        batch.timestamps  # (B,) seconds since the video's start

A short clip for a model in one call (``recot.VideoChat.encode`` streams long
videos in bounded memory instead)::

    batch = read_frames("clip.mp4", num_frames=64, size=model.config.image_size)
    encoded = model.encode_video(processor.normalize(torch.from_numpy(batch.frames)), batch.timestamps)

Probing and planning need no torch; the decoding names (``FrameBatch``,
``iter_frames``, ``read_frames``) load on first use, so ``import recot.video``
stays light for tools that only inspect files.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from recot.video.errors import (
    CorruptVideoError,
    DecodeTimeoutError,
    EmptyVideoError,
    FrameCountCappedWarning,
    NotAVideoError,
    NoVideoStreamError,
    PartialDecodeWarning,
    UnsupportedVideoError,
    VideoDecodeError,
    VideoNotFoundError,
    VideoRangeError,
)
from recot.video.probe import IMAGE_EXTENSIONS, VideoInfo, probe
from recot.video.sample import SamplePlan, plan_frames

if TYPE_CHECKING:
    from recot.video.decode import FrameBatch, iter_frames, read_frames

# Names whose module imports torch, loaded on first access (PEP 562).
_LAZY = {"FrameBatch": "recot.video.decode", "iter_frames": "recot.video.decode", "read_frames": "recot.video.decode"}

__all__ = [
    "IMAGE_EXTENSIONS",
    "CorruptVideoError",
    "DecodeTimeoutError",
    "EmptyVideoError",
    "FrameBatch",
    "FrameCountCappedWarning",
    "NoVideoStreamError",
    "NotAVideoError",
    "PartialDecodeWarning",
    "SamplePlan",
    "UnsupportedVideoError",
    "VideoDecodeError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoRangeError",
    "iter_frames",
    "plan_frames",
    "probe",
    "read_frames",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
