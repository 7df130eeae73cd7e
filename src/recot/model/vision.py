"""The vision tower: SigLIP features of every frame, resized to the compressor's grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipVisionModel

from recot.config import VideoXLProConfig
from recot.model.numerics import upcast


class VisionTower(nn.Module):
    """SigLIP encoder without its post-layernorm and pooling head.

    ``forward``: pixel values (N, 3, S, S) -> features (N, P*P, C), the hidden
    states after the last encoder layer that runs (P = S / patch). Frames go
    through in batches of ``config.vision_batch_size`` so that memory does not
    grow with N. The released checkpoint still stores ``post_layernorm``; it is
    kept here (and never applied) so that the keys match.
    """

    def __init__(self, config: VideoXLProConfig) -> None:
        super().__init__()
        self.batch_size = config.vision_batch_size
        vision_config = config.vision_config()
        vision_config._attn_implementation = "sdpa"
        self.siglip = SiglipVisionModel(vision_config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        parts = []
        for chunk in pixel_values.split(self.batch_size):
            hidden = self.siglip.embeddings(chunk.to(self.siglip.embeddings.patch_embedding.weight.dtype))
            parts.append(self.siglip.encoder(inputs_embeds=hidden).last_hidden_state)
        return torch.cat(parts)


def resize_to_grid(features: torch.Tensor, grid_size: int) -> torch.Tensor:
    """(N, P*P, C) -> (N, C, grid, grid) by bilinear interpolation in (at least) float32.

    The released model maps SigLIP's 27x27 patches to 24x24 this way
    (``align_corners=False``) before compressing.
    """
    n, num_patches, c = features.shape
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"vision features have {num_patches} patches, not a square grid")
    grid = features.transpose(1, 2).reshape(n, c, side, side)
    resized = F.interpolate(grid.to(upcast(grid.dtype)), size=(grid_size, grid_size), mode="bilinear", align_corners=False)
    return resized.to(features.dtype)
