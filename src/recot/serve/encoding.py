"""Encode a video for the server with a call-out between compressor chunks.

The server's worker must answer questions about encoded videos while a long
video is being encoded: :meth:`recot.engine.VideoChat.encode_planned` calls
``between_chunks(groups_done, groups_total)`` after every chunk; the worker
answers waiting questions there, and may raise to abandon the encode. The
tokens and the cache entry are those of ``recot ask``.
"""

from __future__ import annotations

from collections.abc import Callable

from recot.engine import VideoChat, VideoEncoding
from recot.video import SamplePlan

BetweenChunks = Callable[[int, int], None]


def encode_interleaved(
    chat: VideoChat, path: str, plan: SamplePlan, key: str, between_chunks: BetweenChunks
) -> VideoEncoding:
    """The encoding of ``path`` under ``plan`` (cache key ``key``), from the cache or computed and stored."""
    if chat.cache is None:
        raise ValueError("the server needs a VideoChat with an EncodingCache")
    encoding = chat.encode_planned(path, plan, on_progress=between_chunks)
    if encoding.key != key:  # the key the server filed the job under must be the engine's
        raise RuntimeError(f"cache key mismatch for {path}: {encoding.key} != {key}")
    return encoding
