"""Encode a video the way :meth:`recot.engine.VideoChat.encode` does, with a call-out between chunks.

The server's worker must answer questions about encoded videos while a long
video is being encoded. ``VideoChat.encode`` runs to the end in one call, so
this module drives the same pieces itself (``recot.video.iter_frames`` ->
:class:`recot.engine.StreamingEncoder`, the same cache key, metadata and
partial-decode rule) and calls ``between_chunks(groups_done, groups_total)``
after every compressor chunk; the worker answers waiting questions there, and
may raise to abandon the encode. The tokens are the engine's, bit for bit, and
the cache entry is the one ``recot ask`` would write and read.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recot.engine import StreamingEncoder, VideoChat, VideoEncoding
from recot.engine.stream import FrameCountError, num_groups
from recot.model.videoxl_pro import EncodedVideo
from recot.video import PartialDecodeWarning, SamplePlan, VideoDecodeError, iter_frames

BetweenChunks = Callable[[int, int], None]


def encode_interleaved(
    chat: VideoChat, path: str, plan: SamplePlan, key: str, between_chunks: BetweenChunks
) -> VideoEncoding:
    """The encoding of ``path`` under ``plan`` (cache key ``key``), from the cache or computed and stored."""
    started = time.perf_counter()
    if chat.cache is None:
        raise ValueError("the server needs a VideoChat with an EncodingCache")

    def compute() -> tuple[EncodedVideo, dict[str, Any]]:
        encoded, indices = _encode_plan(chat, path, plan, between_chunks)
        return encoded, {
            "video": str(Path(path).resolve()),
            "rule": plan.rule,
            "frames": len(indices),
            "frame_indices": json.dumps(indices.tolist()),
            "model_id": chat.model_id,
        }

    encoded, metadata, hit = chat.cache.get_or_compute(key, compute)
    indices = json.loads(metadata["frame_indices"]) if "frame_indices" in metadata else None
    return VideoEncoding(path, encoded, int(metadata["frames"]), indices, hit, time.perf_counter() - started, key)


def _encode_plan(
    chat: VideoChat, path: str, plan: SamplePlan, between_chunks: BetweenChunks
) -> tuple[EncodedVideo, np.ndarray]:
    """Stream-encode the planned frames; frames that fail to decode are left out (with a warning)."""
    try:
        return _stream(chat, path, plan, between_chunks), plan.indices
    except FrameCountError as exc:
        decoded = exc.received_indices
    if len(decoded) == 0:
        raise VideoDecodeError(path, "no planned frame could be decoded")
    warnings.warn(
        f"{path}: {len(plan) - len(decoded)} of {len(plan)} planned frames could not be decoded; encoding the rest",
        PartialDecodeWarning,
        stacklevel=2,
    )
    times = plan.info.frame_times[decoded].astype(np.float64)
    reduced = SamplePlan(plan.info, decoded, times, plan.rule + ", undecodable frames left out")
    try:
        return _stream(chat, path, reduced, between_chunks), decoded
    except FrameCountError as exc:
        raise VideoDecodeError(path, f"decoding is not repeatable ({exc})") from exc


def _stream(chat: VideoChat, path: str, plan: SamplePlan, between_chunks: BetweenChunks) -> EncodedVideo:
    config = chat.model.config
    total = num_groups(len(plan), config.frames_per_group)
    done = 0

    def on_groups(n: int) -> None:
        nonlocal done
        done += n
        between_chunks(done, total)

    encoder = StreamingEncoder(chat.model, chat.processor, len(plan), on_groups=on_groups)
    batches = iter_frames(
        path, plan, batch_size=config.compressor_batch_size * config.frames_per_group, size=config.image_size
    )
    received: list[np.ndarray] = [np.empty(0, dtype=np.int64)]
    position = 0
    for batch in batches:
        received.append(batch.indices)
        if not np.array_equal(batch.indices, plan.indices[position : position + len(batch)]):
            break  # a frame failed to decode: the group layout no longer holds
        encoder.add(batch.frames, batch.indices, batch.timestamps)
        position += len(batch)
    # After a break this drains the decoder, to learn which frames do decode.
    decoded = np.concatenate(received + [b.indices for b in batches])
    if not np.array_equal(decoded, plan.indices):
        raise FrameCountError(len(plan), decoded)
    return encoder.finish()
