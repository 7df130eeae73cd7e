"""Streaming encoder: decoded frame batches in, compressed video tokens out.

Frames arrive in decode batches; as soon as the frames of one compressor chunk
(``config.compressor_batch_size`` groups of ``frames_per_group`` frames of the
group order, see :func:`recot.model.videoxl_pro.group_frame_order`) are
there, the chunk goes through vision tower -> resize -> group -> compressor ->
projector -> pool, its tokens are written into a preallocated (G, P, D) store
and its frames are dropped. Only the store grows with the video; everything
else is bounded by the decode batch and the chunk. The chunks are exactly those
of :meth:`VideoXLPro.encode_video`, so the tokens are bit-for-bit the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from recot.model.processor import VideoXLProProcessor
from recot.model.videoxl_pro import EncodedVideo, VideoXLPro, group_frame_order


def num_groups(num_frames: int, frames_per_group: int) -> int:
    """Groups that ``num_frames`` frames fill (see :func:`recot.model.videoxl_pro.group_frame_order`)."""
    return -(-max(num_frames, frames_per_group) // frames_per_group)


class FrameCountError(RuntimeError):
    """The frame source yielded other frames than planned (e.g. some failed to decode)."""

    def __init__(self, expected: int, received_indices: np.ndarray) -> None:
        self.expected = expected
        self.received_indices = received_indices
        super().__init__(f"planned {expected} frames but the source gave {len(received_indices)}")


class StreamingEncoder:
    """Encode a video of ``num_frames`` planned frames from batches, in bounded memory.

    Feed uint8 frames (B, S, S, 3) already at the model's image size, with
    their source frame indices and timestamps, through :meth:`add` in plan
    order, then call :meth:`finish`. ``on_groups(n)`` is called after each
    encoded chunk with the number of groups it produced (for progress bars).
    """

    def __init__(
        self,
        model: VideoXLPro,
        processor: VideoXLProProcessor,
        num_frames: int,
        on_groups: Callable[[int], None] | None = None,
    ) -> None:
        config = model.config
        self.model = model
        self.processor = processor
        self.num_frames = num_frames
        self.on_groups = on_groups
        self.fpg = config.frames_per_group
        self.order = torch.tensor(group_frame_order(num_frames, self.fpg))
        self.chunks = list(self.order.split(config.compressor_batch_size * self.fpg))
        shape = (num_groups(num_frames, self.fpg), config.tokens_per_group, config.hidden_size)
        self.tokens = torch.empty(shape, dtype=model.dtype, device=model.device)
        self.frame_timestamps = np.empty(num_frames, dtype=np.float64)
        self.frame_indices = np.empty(num_frames, dtype=np.int64)
        self._received = 0  # frames (plan positions) seen so far
        self._pending = torch.empty(0)  # normalised frames of plan positions [self._pending_start, self._received)
        self._pending_start = 0
        self._next_chunk = 0
        self._groups_done = 0

    @torch.no_grad()
    def add(self, frames: np.ndarray | torch.Tensor, indices: np.ndarray, timestamps: np.ndarray) -> None:
        """Append a batch of frames (plan order) and encode every chunk that is now complete.

        Raises ``ValueError`` when ``frames``, ``indices`` and ``timestamps`` differ in length.
        """
        n = len(frames)
        if len(indices) != n or len(timestamps) != n:
            raise ValueError(f"a batch of {n} frames came with {len(indices)} indices and {len(timestamps)} timestamps")
        if self._received + n > self.num_frames:
            raise FrameCountError(self.num_frames, np.concatenate([self.frame_indices[: self._received], indices]))
        self.frame_indices[self._received : self._received + n] = indices
        self.frame_timestamps[self._received : self._received + n] = timestamps
        pixels = self.processor.normalize(torch.as_tensor(frames))
        self._pending = pixels if not len(self._pending) else torch.cat([self._pending, pixels])
        self._received += n
        while self._next_chunk < len(self.chunks) and int(self.chunks[self._next_chunk][-1]) < self._received:
            self._encode_chunk(self.chunks[self._next_chunk])
            self._next_chunk += 1

    def _encode_chunk(self, positions: torch.Tensor) -> None:
        tokens = self.model.encode_groups(self._pending[positions - self._pending_start])
        self.tokens[self._groups_done : self._groups_done + len(tokens)] = tokens
        self._groups_done += len(tokens)
        # Frames before the next chunk's first position are never needed again.
        keep_from = int(self.chunks[self._next_chunk + 1][0]) if self._next_chunk + 1 < len(self.chunks) else self._received
        self._pending = self._pending[keep_from - self._pending_start :].clone()
        self._pending_start = keep_from
        if self.on_groups is not None:
            self.on_groups(len(tokens))

    def finish(self) -> EncodedVideo:
        """The encoded video; raises :class:`FrameCountError` if frames are missing."""
        if self._received != self.num_frames or self._next_chunk != len(self.chunks):
            raise FrameCountError(self.num_frames, self.frame_indices[: self._received].copy())
        group_times = torch.from_numpy(self.frame_timestamps)[self.order[:: self.fpg]]
        return EncodedVideo(self.tokens, group_times)


def encode_stream(
    model: VideoXLPro,
    processor: VideoXLProProcessor,
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_frames: int,
    on_groups: Callable[[int], None] | None = None,
) -> EncodedVideo:
    """Encode ``(frames, indices, timestamps)`` batches of a ``num_frames``-frame plan (see :class:`StreamingEncoder`)."""
    encoder = StreamingEncoder(model, processor, num_frames, on_groups)
    for frames, indices, timestamps in batches:
        encoder.add(frames, indices, timestamps)
    return encoder.finish()
