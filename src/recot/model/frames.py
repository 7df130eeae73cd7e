"""Frame normalisation: the one place uint8 frames become model pixel values.

    frames uint8 (N, S, S, 3) RGB  ->  pixel values (N, 3, S, S), ``(x / 255 - mean) / std``

The arithmetic runs in float32 on whatever device ``frames`` is on, so a
caller can upload uint8 frames (4x less traffic than float32) and normalise
on the accelerator; the result is then cast to ``dtype``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def normalize_frames(
    frames: np.ndarray | torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> normalised (N, 3, H, W) in ``dtype``, on the frames' device."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 RGB (N, H, W, 3), got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    x = x.sub_(torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1))
    x = x.div_(torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1))
    return x.to(dtype)
