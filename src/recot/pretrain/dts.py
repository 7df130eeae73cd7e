"""Dynamic Token Synthesizer (DTS): a pseudo-video clip from one image's tokens.

Image data sets are far larger and more varied than video ones; DTS lets them
train the compressor by turning an image's token grid into ``T`` plausible
frames. Frame ``t`` is the image plus a gated, attention-based re-arrangement
of the image's own tokens ("intra-token relationships"): every token attends
over all tokens of the image with a query shifted by a learned per-step
offset, so each step moves content differently (a learned, content-dependent
displacement, like motion).

DTS learns its dynamics from real videos: given the first frame of a real
clip it predicts all ``T`` frames (loss in :func:`dts_prediction_loss`). When
it synthesises clips from images for the compressor, its output is detached,
so the compressor's reconstruction loss cannot make DTS collapse to
trivially easy (identical) frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sincos_2d(h: int, w: int, channels: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed 2-D sine-cosine position encoding (H*W, C) for any grid (C padded with zeros)."""
    quarter = max(channels // 4, 1)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        angles = coord[:, None] * freqs[None, :]
        parts += [angles.sin(), angles.cos()]
    enc = torch.cat(parts, dim=1)[:, :channels]
    return F.pad(enc, (0, channels - enc.shape[1]))


class DynamicTokenSynthesizer(nn.Module):
    """Image tokens (B, C, H, W) -> pseudo-video tokens (B, C, T, H, W).

    ``frame_t = x + gate_t * W_o · softmax((x̂ + p + e_t) W_q · ((x̂ + p) W_k)^T / sqrt(d)) · x̂ W_v``
    with x̂ the layer-normalised tokens, p a fixed 2-D position encoding, e_t a
    learned step offset and ``gate_t`` a learned per-step scale. ``attn_dim``
    is the width of queries and keys.
    """

    def __init__(self, channels: int, frames: int = 4, attn_dim: int = 64) -> None:
        super().__init__()
        self.frames = frames
        self.attn_dim = attn_dim
        self.norm = nn.LayerNorm(channels)
        self.step_offset = nn.Parameter(torch.randn(frames, channels) * 0.5)
        self.q = nn.Linear(channels, attn_dim)
        self.k = nn.Linear(channels, attn_dim)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)
        # Non-zero start so that untrained frames already differ from the image and each other.
        self.gate = nn.Parameter(torch.linspace(0.25, 1.0, frames))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"DTS expects image tokens (B, C, H, W), got {tuple(x.shape)}")
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        normed = self.norm(tokens)
        pos = sincos_2d(h, w, c, device=x.device).to(normed.dtype)
        keys = self.k(normed + pos)  # (B, N, D)
        values = self.v(normed)
        queries = self.q((normed + pos)[:, None] + self.step_offset[None, :, None, :])  # (B, T, N, D)
        attn = F.scaled_dot_product_attention(queries, keys[:, None], values[:, None])  # (B, T, N, C)
        frames = tokens[:, None] + self.gate[None, :, None, None] * self.out(attn)
        return frames.reshape(b, self.frames, h, w, c).permute(0, 4, 1, 2, 3)


def dts_prediction_loss(dts: DynamicTokenSynthesizer, clip: torch.Tensor) -> torch.Tensor:
    """Per-clip loss (B,) of DTS predicting a real clip (B, C, T, H, W) from its first frame.

    Mean squared error between layer-normalised features (the same target
    normalisation as the reconstruction objective).
    """
    pred = dts(clip[:, :, 0])
    c = clip.shape[1]
    diff = F.layer_norm(pred.movedim(1, -1), (c,)) - F.layer_norm(clip.float().movedim(1, -1), (c,))
    return diff.pow(2).mean(dim=(1, 2, 3, 4))
