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
    encoded = model.encode_video(torch.from_numpy(batch.frames), batch.timestamps)

The names below are imported on first use, and nothing in this package imports
torch, so ``import recot.video`` (as ``recot --help`` does) costs nothing and
probing costs only PyAV.
"""

from typing import TYPE_CHECKING

from recot._lazy import lazy_package

lazy_package(
    __name__,
    {
        "CorruptVideoError": "recot.video.errors",
        "DecodeTimeoutError": "recot.video.errors",
        "EmptyVideoError": "recot.video.errors",
        "FrameCountCappedWarning": "recot.video.errors",
        "IMAGE_EXTENSIONS": "recot.video.probe",
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

