"""Masked reconstruction objective of ReCoT pre-training: encoder (the compressor), decoder, loss.

The compressor sees a clip of ``T`` frames of vision features in which masked
tokens are replaced by one learned mask token, and compresses it to one frame.
The decoder mirrors the encoder with temporal upsampling and must rebuild all
``T`` frames of features from that single frame. The compressed frame is thus
pushed to hold per-frame content (what the decoder needs) rather than a blur
of the group, and, because masked tokens are never seen, to model how tokens
of a clip relate to each other.

Loss per clip (targets are the features layer-normalised per token, without
affine, so that the loss does not depend on the backbone's feature scale and
large-norm tokens do not dominate):

    L = mean_{masked}(|ŷ - y|^2) + visible_weight * mean_{visible}(|ŷ - y|^2)

The visible term keeps the compressed tokens faithful to what the model saw
(the downstream model only ever sees unmasked clips); it is down-weighted so
that the harder masked term drives learning. A clip without masked tokens
(masking "none") uses the visible mean with weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recot.model.compressor import ReCoTCompressor, SpatialAttentionBlock, TemporalAttentionBlock


class TemporalUpsample(nn.Module):
    """Transposed 2x3x3 convolution doubling time: (B, C, T, H, W) -> (B, C, 2T, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(channels, channels, kernel_size=(2, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ReCoTDecoder(nn.Module):
    """Compressed tokens (B, C, 1, H, W) -> reconstructed features (B, C, 2**stages, H, W).

    Mirror of the compressor: ``stages`` times (temporal upsampling, spatial
    attention, temporal attention), then a learned per-frame embedding, a
    GroupNorm and a 1x1x1 output projection. Output is in the space of the
    layer-normalised target features.
    """

    def __init__(self, channels: int, stages: int = 2, norm_groups: int = 32, max_relative_position: int = 64) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for _ in range(stages):
            blocks += [
                TemporalUpsample(channels),
                SpatialAttentionBlock(channels, norm_groups),
                TemporalAttentionBlock(channels, norm_groups, max_relative_position, official_compat=False),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.frame_embedding = nn.Parameter(torch.zeros(2**stages, channels))
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj = nn.Conv3d(channels, channels, kernel_size=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.blocks(z)
        x = x + self.frame_embedding.t()[None, :, :, None, None].to(x.dtype)
        return self.proj(self.norm(x))


def normalize_targets(features: torch.Tensor) -> torch.Tensor:
    """Layer-normalise every token (over C, no affine): (B, C, T, H, W) -> same shape."""
    return F.layer_norm(features.float().movedim(1, -1), (features.shape[1],)).movedim(-1, 1)


def masked_reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, visible_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-clip losses of a reconstruction.

    Args:
        pred, target: (B, C, T, H, W); target already normalised.
        mask: (B, T, H, W) bool, True = masked.
        visible_weight: weight of the visible-token term.

    Returns:
        (loss, masked_mse, visible_mse), each (B,). ``masked_mse`` is 0 for a clip with no masked token.
    """
    err = (pred.float() - target).pow(2).mean(dim=1)  # (B, T, H, W)
    m = mask.float()
    n_masked = m.sum(dim=(1, 2, 3))
    n_visible = (1 - m).sum(dim=(1, 2, 3))
    masked = (err * m).sum(dim=(1, 2, 3)) / n_masked.clamp(min=1)
    visible = (err * (1 - m)).sum(dim=(1, 2, 3)) / n_visible.clamp(min=1)
    loss = torch.where(n_masked > 0, masked + visible_weight * visible, visible)
    return loss, masked, visible


@dataclass
class ReconstructionOutput:
    """Per-clip losses (B,) and the reconstruction (B, C, T, H, W) of one forward pass."""

    loss: torch.Tensor
    masked_mse: torch.Tensor
    visible_mse: torch.Tensor
    reconstruction: torch.Tensor


class MaskedReconstructionModel(nn.Module):
    """Compressor + decoder + mask token.

    ``forward(clips (B, C, T, H, W), mask (B, T, H, W))`` -> :class:`ReconstructionOutput`;
    ``encode(clips)`` -> (B, C, 1, H, W) compressed tokens (no masking).
    """

    def __init__(
        self, compressor: ReCoTCompressor, decoder: ReCoTDecoder, channels: int, visible_weight: float = 0.1
    ) -> None:
        super().__init__()
        self.compressor = compressor
        self.decoder = decoder
        self.mask_token = nn.Parameter(torch.zeros(channels))
        self.visible_weight = visible_weight

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """Compress clips (B, C, T, H, W) -> (B, C, 1, H, W)."""
        return self.compressor(clips)

    def forward(self, clips: torch.Tensor, mask: torch.Tensor) -> ReconstructionOutput:
        m = mask[:, None].to(clips.dtype)  # (B, 1, T, H, W)
        inputs = clips * (1 - m) + self.mask_token[None, :, None, None, None].to(clips.dtype) * m
        recon = self.decoder(self.compressor(inputs))
        loss, masked, visible = masked_reconstruction_loss(recon, normalize_targets(clips), mask, self.visible_weight)
        return ReconstructionOutput(loss, masked, visible, recon)
