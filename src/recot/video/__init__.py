"""Video input: probe files, plan frame samples with true timestamps, stream decoded frames in batches.

Typical use::

    info = probe("movie.mkv")
    plan = plan_frames(info, fps=1, max_frames=1024)
    for batch in iter_frames("movie.mkv", plan, batch_size=64, size=384):
        model.encode(batch.to_tensor(mean, std), batch.timestamps)
"""

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
