"""Streaming encoder: frame batches in, compressed video tokens out, in bounded memory.

Frames arrive in batches, in plan order. As soon as the frames of one encode
chunk of the :class:`~recot.model.groups.GroupPlan` are there, the chunk goes
through vision tower -> resize -> group -> compressor -> projector -> pool
(:meth:`VideoXLPro.encode_groups`), its (groups, P, D) tokens are written into a
preallocated (G, P, D) store and its frames are dropped. Only the store grows
with the video. :meth:`VideoXLPro.encode_video` is this encoder fed one batch,
so there is one encode path.

Frames may be uint8 RGB (B, S, S, 3), normalised on the model's device
(:func:`recot.model.frames.normalize_frames`), or pixel values (B, 3, S, S)
already normalised (as :class:`~recot.model.processor.VideoXLProProcessor` makes them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from recot.model.frames import normalize_frames
from recot.model.groups import GroupPlan


@dataclass
class EncodedVideo:
    """A video's compressed, pre-selection tokens: what the encode-once cache stores.

    ``tokens`` (G, P, D) pooled visual tokens; ``timestamps`` (G,) float64, the
    time in seconds of each group's first frame.
    """

    tokens: torch.Tensor
    timestamps: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 3 or self.timestamps.shape != (self.tokens.shape[0],):
            raise ValueError(
                f"EncodedVideo needs tokens (G, P, D) and timestamps (G,), got "
                f"{tuple(self.tokens.shape)} and {tuple(self.timestamps.shape)}"
            )

    @property
    def num_groups(self) -> int:
        return self.tokens.shape[0]

    @property
    def num_visual_tokens(self) -> int:
        return self.tokens.shape[0] * self.tokens.shape[1]


@dataclass
class EncoderStages:
    """Every stage's output for the encoded groups (n frames in group order, n / 4 groups).

    ``vision_features`` (n, patches, C), ``resized_features`` (n, C, g, g),
    ``compressor_input`` (n/4, C, 4, g, g), ``compressor_output`` (n/4, g*g, C),
    ``projector_output`` (n/4, g*g, D), ``pooled_tokens`` (n/4, P, D).
    """

    vision_features: torch.Tensor
    resized_features: torch.Tensor
    compressor_input: torch.Tensor
    compressor_output: torch.Tensor
    projector_output: torch.Tensor
    pooled_tokens: torch.Tensor

    @classmethod
    def concat(cls, parts: list[EncoderStages]) -> EncoderStages:
        """Join the stages of consecutive chunks."""
        return cls(*(torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)))


class FrameCountError(RuntimeError):
    """The frame source yielded other frames than planned."""

    def __init__(self, expected: int, received: int) -> None:
        self.expected = expected
        self.received = received
        super().__init__(f"planned {expected} frames but the source gave {received}")


class StreamingEncoder:
    """Encode a video of ``num_frames`` planned frames from batches (see the module docstring).

    ``model`` is a :class:`~recot.model.videoxl_pro.VideoXLPro` (typed as a
    module here so that this module does not import the model's: no cycle).

    ``on_groups(n)`` is called after each encoded chunk with the number of
    groups it produced (for progress bars). Gradients flow only with ``grad``
    (training through the encoder); otherwise :meth:`add` runs without autograd.
    With ``keep_stages`` every stage's
    output is kept and returned by :attr:`stages` after :meth:`finish`
    (memory then grows with the video: for inspection, not for long videos).
    """

    def __init__(
        self,
        model: nn.Module,
        num_frames: int,
        on_groups: Callable[[int], None] | None = None,
        keep_stages: bool = False,
        grad: bool = False,
    ) -> None:
        config = model.config
        self.grad = grad
        self.model = model
        self.plan = GroupPlan.for_config(num_frames, config)
        self.on_groups = on_groups
        self.tokens = torch.empty(
            (self.plan.num_groups, config.tokens_per_group, config.hidden_size), dtype=model.dtype, device=model.device
        )
        self.frame_timestamps = np.empty(num_frames, dtype=np.float64)
        self.stages: EncoderStages | None = None
        self._stage_parts: list[EncoderStages] | None = [] if keep_stages else None
        self._chunks = self.plan.chunks
        self._received = 0  # plan positions seen so far
        self._pending = torch.empty(0)  # pixel values of plan positions [self._pending_start, self._received)
        self._pending_start = 0
        self._next_chunk = 0
        self._groups_done = 0

    @property
    def num_frames(self) -> int:
        return self.plan.num_frames

    def add(self, frames: np.ndarray | torch.Tensor, timestamps: np.ndarray | torch.Tensor) -> None:
        """Append a batch of frames (plan order) with their times, and encode every chunk now complete.

        Raises ``ValueError`` when frames and timestamps differ in length and
        :class:`FrameCountError` when more frames arrive than planned.
        """
        n = len(frames)
        if len(timestamps) != n:
            raise ValueError(f"a batch of {n} frames came with {len(timestamps)} timestamps")
        if self._received + n > self.num_frames:
            raise FrameCountError(self.num_frames, self._received + n)
        with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
            self._add(frames, timestamps)

    def _add(self, frames: np.ndarray | torch.Tensor, timestamps: np.ndarray | torch.Tensor) -> None:
        n = len(frames)
        self.frame_timestamps[self._received : self._received + n] = np.asarray(timestamps, dtype=np.float64)
        pixels = self._pixels(frames)
        self._pending = pixels if not len(self._pending) else torch.cat([self._pending, pixels])
        self._received += n
        while self._next_chunk < len(self._chunks) and int(self._chunks[self._next_chunk][-1]) < self._received:
            self._encode_chunk(self._chunks[self._next_chunk])
            self._next_chunk += 1

    def _pixels(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames as pixel values on the model's device, in the model's dtype."""
        frames = torch.as_tensor(frames)
        if frames.dtype == torch.uint8:
            config = self.model.config
            # Upload uint8 (non-blocking from pinned memory on CUDA), normalise there.
            on_device = frames.to(self.model.device, non_blocking=frames.is_pinned())
            return normalize_frames(on_device, config.image_mean, config.image_std, self.model.dtype)
        return frames.to(self.model.device, self.model.dtype)

    def _encode_chunk(self, positions: torch.Tensor) -> None:
        stages = self.model.encode_groups(self._pending[positions - self._pending_start])
        tokens = stages.pooled_tokens
        self.tokens[self._groups_done : self._groups_done + len(tokens)] = tokens
        self._groups_done += len(tokens)
        if self._stage_parts is not None:
            self._stage_parts.append(stages)
        # Frames before the next chunk's first position are never needed again.
        last = self._next_chunk + 1 >= len(self._chunks)
        keep_from = self._received if last else int(self._chunks[self._next_chunk + 1][0])
        self._pending = self._pending[keep_from - self._pending_start :].clone()
        self._pending_start = keep_from
        if self.on_groups is not None:
            self.on_groups(len(tokens))

    def finish(self) -> EncodedVideo:
        """The encoded video; raises :class:`FrameCountError` if frames are missing."""
        if self._received != self.num_frames or self._next_chunk != len(self._chunks):
            raise FrameCountError(self.num_frames, self._received)
        if self._stage_parts is not None:
            self.stages = EncoderStages.concat(self._stage_parts)
        return EncodedVideo(self.tokens, self.plan.group_timestamps(self.frame_timestamps))
