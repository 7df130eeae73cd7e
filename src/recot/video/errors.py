"""Errors and warnings raised while reading videos.

Every error names the file and the cause, so a failure deep inside a data
loader or a long batch job can be traced back to one input.
"""

from __future__ import annotations

from pathlib import Path


class VideoDecodeError(Exception):
    """A video (or image) could not be read. ``path`` and ``cause`` say which and why."""

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class VideoNotFoundError(VideoDecodeError):
    """The path does not exist."""


class NotAVideoError(VideoDecodeError):
    """FFmpeg cannot open the file as media (random bytes, a text file, a truncated header)."""


class NoVideoStreamError(VideoDecodeError):
    """The file is media but has no video stream (e.g. audio only)."""


class EmptyVideoError(VideoDecodeError):
    """The video stream holds no frames."""


class CorruptVideoError(VideoDecodeError):
    """The video stream exists but its frames cannot be decoded."""


class UnsupportedVideoError(VideoDecodeError):
    """The video is readable in principle but outside what we accept (absurd size, no decoder)."""


class VideoRangeError(VideoDecodeError, ValueError):
    """The requested time range or frames lie outside the video."""


class DecodeTimeoutError(VideoDecodeError, TimeoutError):
    """Decoding took longer than its time budget."""


class PartialDecodeWarning(UserWarning):
    """A damaged video decoded only in part; the message says where decoding stopped."""


class FrameCountCappedWarning(UserWarning):
    """More frames were asked for than the video (or the asked time range) holds: each frame is used once instead."""
