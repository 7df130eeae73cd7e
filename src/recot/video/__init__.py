"""Video input: probe files, plan frame samples with true timestamps, stream decoded frames in batches.

Typical use::

    info = probe("movie.mkv")
    plan = plan_frames(info, fps=1, max_frames=1024)
    for batch in iter_frames("movie.mkv", plan, batch_size=64, size=384):
        model.encode(batch.to_tensor(mean, std), batch.timestamps)

The names below are imported on first use, so that importing ``recot.video``
(as ``recot --help`` does) costs no PyAV or torch import.
"""

from typing import TYPE_CHECKING

from recot._lazy import lazy_package

lazy_package(
    __name__,
    {
        "CorruptVideoError": "recot.video.errors",
        "DecodeTimeoutError": "recot.video.errors",
        "EmptyVideoError": "recot.video.errors",
        "FrameBatch": "recot.video.decode",
        "NoVideoStreamError": "recot.video.errors",
        "NotAVideoError": "recot.video.errors",
        "PartialDecodeWarning": "recot.video.errors",
        "SamplePlan": "recot.video.sample",
        "UnsupportedVideoError": "recot.video.errors",
        "VideoDecodeError": "recot.video.errors",
        "VideoInfo": "recot.video.probe",
        "VideoNotFoundError": "recot.video.errors",
        "VideoRangeError": "recot.video.errors",
        "iter_frames": "recot.video.decode",
        "plan_frames": "recot.video.sample",
        "probe": "recot.video.probe",
        "read_frames": "recot.video.decode",
    },
)

if TYPE_CHECKING:  # for type checkers and editors
    from recot.video.decode import FrameBatch, iter_frames, read_frames
    from recot.video.errors import (
        CorruptVideoError,
        DecodeTimeoutError,
        EmptyVideoError,
        NotAVideoError,
        NoVideoStreamError,
        PartialDecodeWarning,
        UnsupportedVideoError,
        VideoDecodeError,
        VideoNotFoundError,
        VideoRangeError,
    )
    from recot.video.probe import VideoInfo, probe
    from recot.video.sample import SamplePlan, plan_frames

__all__ = [
    "CorruptVideoError",
    "DecodeTimeoutError",
    "EmptyVideoError",
    "FrameBatch",
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
