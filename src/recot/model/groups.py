"""How N sampled frames fill the compressor's groups, and in which chunks they are encoded.

The compressor turns ``frames_per_group`` (4) frames into one; the model
encodes ``compressor_batch_size`` groups at a time. For N frames:

    order        (4G,)  frame positions in group order (:func:`group_frame_order`)
    chunks       list of (<= 4 * batch,) slices of ``order``, encoded one after another
    group times  (G,)   the timestamp of each group's first frame

:class:`GroupPlan` is the single source of these numbers for the model, the
streaming encoder, the processor, the engine and the memory planner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from recot.config import VideoXLProConfig


def group_frame_order(num_frames: int, frames_per_group: int = 4) -> list[int]:
    """Frame indices, in order, that fill whole groups of ``frames_per_group``.

    Fewer frames than a group: the last frame is repeated. Otherwise, when
    ``num_frames`` is not a multiple of the group size, ``m`` distinct frames are
    each duplicated once in place. The released code picks them at random; here
    they are evenly spaced (frame ``(2j + 1) * N // (2m)`` for ``j < m``), so the
    same video always gives the same tokens.
    """
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if num_frames < frames_per_group:
        return list(range(num_frames)) + [num_frames - 1] * (frames_per_group - num_frames)
    missing = -num_frames % frames_per_group
    duplicated = {(2 * j + 1) * num_frames // (2 * missing) for j in range(missing)}
    order = []
    for i in range(num_frames):
        order += [i, i] if i in duplicated else [i]
    return order


@dataclass(frozen=True)
class GroupPlan:
    """Groups and encode chunks of ``num_frames`` frames (see the module docstring)."""

    num_frames: int
    frames_per_group: int = 4
    groups_per_chunk: int = 1
    order: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.groups_per_chunk < 1:
            raise ValueError(f"groups_per_chunk must be >= 1, got {self.groups_per_chunk}")
        object.__setattr__(self, "order", torch.tensor(group_frame_order(self.num_frames, self.frames_per_group)))

    @classmethod
    def for_config(cls, num_frames: int, config: VideoXLProConfig) -> GroupPlan:
        """The plan the model uses for ``num_frames`` frames."""
        return cls(num_frames, config.frames_per_group, config.compressor_batch_size)

    @property
    def num_groups(self) -> int:
        return len(self.order) // self.frames_per_group

    @property
    def chunks(self) -> list[torch.Tensor]:
        """Frame positions of each encode chunk, in group order (whole groups only)."""
        return list(self.order.split(self.groups_per_chunk * self.frames_per_group))

    @property
    def first_frames(self) -> torch.Tensor:
        """(G,) the position of each group's first frame."""
        return self.order[:: self.frames_per_group]

    def group_timestamps(self, frame_timestamps: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """(N,) frame times -> (G,) float64 time of each group's first frame."""
        times = torch.as_tensor(frame_timestamps, dtype=torch.float64)
        if times.shape != (self.num_frames,):
            raise ValueError(f"{self.num_frames} frames but {times.numel()} timestamps")
        return times[self.first_frames]

