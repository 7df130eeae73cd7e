"""The ReCoT compressor: a group of 4 frames of vision features in, 1 frame out.

Two stages, each: spatial self-attention within every frame, temporal
self-attention with learned relative positions along every spatial position,
then a 3x3x3 convolution with temporal stride 2. Parameter names follow the
released checkpoint (``model.sae.*``): ``temporal_encoding`` and
``encoder.{0..5}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recot.config import VideoXLProConfig
from recot.model.numerics import upcast


class SpatialAttentionBlock(nn.Module):
    """Single-head self-attention over the H*W tokens of each frame, with a residual.

    Input and output: (B, C, T, H, W). The GroupNorm sees the whole clip of one
    sample (statistics over C/groups channels x T x H x W); the attention runs
    for every (b, t) independently with scale C^-0.5.
    """

    def __init__(self, channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.q = nn.Conv3d(channels, channels, kernel_size=1)
        self.k = nn.Conv3d(channels, channels, kernel_size=1)
        self.v = nn.Conv3d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv3d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        normed = self.norm(x)

        def tokens(y: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B*T, H*W, C)
            return y.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)

        attn = F.scaled_dot_product_attention(tokens(self.q(normed)), tokens(self.k(normed)), tokens(self.v(normed)))
        attn = attn.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + self.proj_out(attn)


class RelativePosition(nn.Module):
    """Learned embeddings of clipped relative offsets: ``(T, T, C)`` for ``T`` steps.

    Entry ``[i, j]`` is ``embeddings_table[clip(j - i, -max, max) + max]``.
    """

    def __init__(self, channels: int, max_relative_position: int) -> None:
        super().__init__()
        self.max_relative_position = max_relative_position
        self.embeddings_table = nn.Parameter(torch.empty(2 * max_relative_position + 1, channels))
        nn.init.xavier_uniform_(self.embeddings_table)

    def forward(self, length: int) -> torch.Tensor:
        steps = torch.arange(length, device=self.embeddings_table.device)
        offsets = (steps[None, :] - steps[:, None]).clamp(-self.max_relative_position, self.max_relative_position)
        return self.embeddings_table[offsets + self.max_relative_position]


class TemporalAttentionBlock(nn.Module):
    """Single-head self-attention along time at every spatial position, with a residual.

    Input and output: (B, C, T, H, W), processed as B*H*W sequences of length T
    (the GroupNorm's statistics cover C/groups channels x T of one position).
    Logits ``A[t, s] = q_t . k_s + q . Rk`` and outputs ``sum_s P[t, s] (v_s + Rv[t, s])``.
    ``official_compat`` reproduces the released code, which adds the key
    relative-position term transposed (the term of query ``s`` and key ``t`` lands
    at ``[t, s]``); otherwise the standard term ``q_t . Rk[t, s]`` is used.
    """

    def __init__(self, channels: int, norm_groups: int, max_relative_position: int, official_compat: bool) -> None:
        super().__init__()
        self.official_compat = official_compat
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.qkv = nn.Conv1d(channels, 3 * channels, kernel_size=1)
        self.proj_out = nn.Conv1d(channels, channels, kernel_size=1)
        self.relative_position_k = RelativePosition(channels, max_relative_position)
        self.relative_position_v = RelativePosition(channels, max_relative_position)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, c, t)  # (N, C, T)
        q, k, v = self.qkv(self.norm(seq)).chunk(3, dim=1)
        scale = c**-0.25
        q, k = q * scale, k * scale

        rel_k = self.relative_position_k(t).to(q.dtype)  # (T, T, C)
        logits = torch.einsum("nct,ncs->nts", q, k)
        rel_logits = torch.einsum("nct,tsc->nts", q, rel_k)  # query t, key s
        logits = logits + (rel_logits.transpose(1, 2) if self.official_compat else rel_logits)
        probs = logits.softmax(dim=-1, dtype=upcast(logits.dtype)).to(v.dtype)

        rel_v = self.relative_position_v(t).to(v.dtype)
        out = torch.einsum("nts,ncs->nct", probs, v) + torch.einsum("nts,tsc->nct", probs, rel_v)
        seq = seq + self.proj_out(out)
        return seq.reshape(b, h, w, c, t).permute(0, 3, 4, 1, 2)


def replicate_pad(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C, T + 1, H + 2, W + 2): edge values repeated, one step in front in time.

    The same values as ``F.pad(x, (1, 1, 1, 1, 1, 0), mode="replicate")``, built
    from concatenations: they work in every dtype (replicate padding has no
    bfloat16 CPU kernel) and ``torch.compile`` lowers them (its lowering of the
    replicate pad after the temporal attention fails).
    """
    x = torch.cat([x[:, :, :1], x], dim=2)
    x = torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], dim=3)
    return torch.cat([x[..., :1], x, x[..., -1:]], dim=4)


class TemporalStrideConv(nn.Module):
    """3x3x3 convolution with temporal stride 2: (B, C, T, H, W) -> (B, C, T/2, H, W).

    Replicate padding keeps H and W; time is padded one step in front only, so
    each output step sees the two input steps it summarises and the one before.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, kernel_size=3, stride=(2, 1, 1), padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(replicate_pad(x))


class ReCoTCompressor(nn.Module):
    """(B, C, T, H, W) -> (B, C, T / 2**stages, H, W); the released model: T=4 -> 1.

    A learned per-slot temporal encoding is added, then ``stages`` times:
    spatial attention, temporal attention, temporal-stride convolution. With
    ``residual`` (off in the released model) the mean of the input over each
    output step's frames is added to the output, so that what the input carries
    (e.g. a small object's colour) reaches the output even where the learned path
    drops it; the learned path then models what the mean misses. The last
    ``passthrough_channels`` channels skip the learned path altogether: the output there
    is that mean alone (hand-made features such as hue histograms, which the learned
    path would otherwise mix with everything else).
    """

    def __init__(
        self,
        channels: int,
        frames: int = 4,
        stages: int = 2,
        norm_groups: int = 32,
        max_relative_position: int = 64,
        official_compat: bool = True,
        residual: bool = False,
        passthrough_channels: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= passthrough_channels <= channels:
            raise ValueError(f"passthrough_channels={passthrough_channels} must be in [0, {channels}]")
        self.frames = frames
        self.residual = residual
        self.passthrough_channels = passthrough_channels
        self.temporal_encoding = nn.Parameter(torch.randn(frames, channels) * 0.02)
        blocks: list[nn.Module] = []
        for _ in range(stages):
            blocks += [
                SpatialAttentionBlock(channels, norm_groups),
                TemporalAttentionBlock(channels, norm_groups, max_relative_position, official_compat),
                TemporalStrideConv(channels),
            ]
        self.encoder = nn.Sequential(*blocks)

    @classmethod
    def from_config(cls, config: VideoXLProConfig) -> ReCoTCompressor:
        return cls(
            channels=config.vision_hidden_size,
            frames=config.frames_per_group,
            stages=config.compressor_stages,
            norm_groups=config.compressor_norm_groups,
            max_relative_position=config.compressor_max_relative_position,
            official_compat=config.official_compat,
            residual=config.compressor_residual,
            passthrough_channels=config.compressor_passthrough_channels,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != self.frames:
            raise ValueError(f"compressor expects (B, C, {self.frames}, H, W), got {tuple(x.shape)}")
        out = self.encoder(x + self.temporal_encoding.t().to(x.dtype)[None, :, :, None, None])
        if not (self.residual or self.passthrough_channels):
            return out
        mean = x.unflatten(2, (out.shape[2], -1)).mean(3)  # (B, C, T, H, W) -> (B, C, T_out, T / T_out, H, W) -> mean
        if self.residual:
            out = out + mean
        if self.passthrough_channels:
            kept = out.shape[1] - self.passthrough_channels
            out = torch.cat([out[:, :kept], mean[:, kept:]], dim=1)
        return out
