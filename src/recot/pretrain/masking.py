"""Token masks for masked reconstruction: Semantic-Guided Masking (SGM) and uniform random masking.

A mask is a bool tensor (B, T, H, W), True = masked (the compressor sees the
learned mask token there instead of the feature). Every clip gets exactly
``round(ratio * T * H * W)`` masked tokens, so the ratio is exact, not an
expectation.

SGM scores each token's *redundancy* from the frozen vision features:

* temporal: cosine similarity to the same position in the neighbouring frames
  (max over t-1 and t+1): a token that a neighbouring frame repeats carries
  little new information;
* spatial: mean cosine similarity to its 4-neighbours: flat regions repeat
  themselves;
* saliency (optional, subtracted): how far the token is from the clip's mean
  feature; tokens that stand out semantically are kept visible.

Tokens are then drawn without replacement with probability proportional to
``exp(score / temperature)`` (Gumbel top-k), so redundant tokens are masked
more readily but every token can be masked. Uniform random masking is the same
draw with equal scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

STRATEGIES = ("sgm", "random", "none")


def num_masked(tokens: int, ratio: float) -> int:
    """Tokens masked in a clip of ``tokens`` tokens at ``ratio`` (rounded, never all of them)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    return min(int(round(ratio * tokens)), tokens - 1)


def redundancy_scores(
    features: torch.Tensor, temporal_weight: float = 0.5, saliency_weight: float = 0.5
) -> torch.Tensor:
    """Redundancy of every token of clips of vision features.

    Args:
        features: (B, C, T, H, W) frozen vision features.
        temporal_weight: weight of the temporal term; the spatial term gets ``1 - temporal_weight``.
        saliency_weight: weight of the subtracted semantic-saliency term.

    Returns:
        (B, T, H, W) float scores, higher = more redundant (roughly in [-1, 1]).
    """
    f = F.normalize(features.float(), dim=1)
    b, c, t, h, w = f.shape
    if t > 1:
        sim_t = (f[:, :, 1:] * f[:, :, :-1]).sum(1)  # (B, T-1, H, W): frame t vs t+1
        neg = torch.full_like(sim_t[:, :1], -1.0)
        temporal = torch.maximum(torch.cat([sim_t, neg], 1), torch.cat([neg, sim_t], 1))
    else:
        temporal = torch.zeros(b, t, h, w, device=f.device)

    # Mean similarity to the existing 4-neighbours (borders have fewer).
    padded = F.pad(f, (1, 1, 1, 1))
    valid = F.pad(torch.ones(1, 1, 1, h, w, device=f.device), (1, 1, 1, 1))
    total = torch.zeros(b, t, h, w, device=f.device)
    count = torch.zeros(1, 1, h, w, device=f.device)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        total += (f * padded[:, :, :, dy : dy + h, dx : dx + w]).sum(1)
        count += valid[:, 0, :, dy : dy + h, dx : dx + w]
    spatial = total / count

    mean = F.normalize(f.mean(dim=(2, 3, 4), keepdim=True), dim=1)
    saliency = 1.0 - (f * mean).sum(1)  # 0 = typical of the clip, up to 2 = opposite
    return temporal_weight * temporal + (1.0 - temporal_weight) * spatial - saliency_weight * saliency


def _gumbel_top_k(logits: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """Bool mask (B, N) with exactly k True per row, sampled without replacement ~ softmax(logits)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp_(1e-20, 1.0)
    keys = logits - torch.log(-torch.log(u))
    mask = torch.zeros_like(logits, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, keys.topk(k, dim=1).indices, True)
    return mask


def random_mask(
    shape: tuple[int, int, int, int], ratio: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniform random mask (B, T, H, W) with exactly ``round(ratio * T*H*W)`` True per clip."""
    b, t, h, w = shape
    k = num_masked(t * h * w, ratio)
    return _gumbel_top_k(torch.zeros(b, t * h * w), k, generator).reshape(b, t, h, w)


def semantic_guided_mask(
    features: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
    temperature: float = 0.1,
    temporal_weight: float = 0.5,
    saliency_weight: float = 0.5,
    scope: str = "clip",
) -> torch.Tensor:
    """SGM mask (B, T, H, W) of clips of features (B, C, T, H, W).

    ``scope="clip"`` masks exactly ``round(ratio * T*H*W)`` tokens in every clip;
    ``scope="batch"`` spends the same total over the whole batch, so a static
    (redundant) clip gives up more tokens than a changing one. ``temperature``
    sets how strongly redundancy steers the draw (large = uniform).
    """
    if not temperature > 0:
        raise ValueError(f"SGM temperature must be > 0, got {temperature}")
    b, _, t, h, w = features.shape
    logits = redundancy_scores(features, temporal_weight, saliency_weight).reshape(b, t * h * w) / temperature
    if scope == "clip":
        mask = _gumbel_top_k(logits, num_masked(t * h * w, ratio), generator)
    elif scope == "batch":
        mask = _gumbel_top_k(logits.reshape(1, -1), num_masked(b * t * h * w, ratio), generator)
    else:
        raise ValueError(f"scope must be 'clip' or 'batch', got {scope!r}")
    return mask.reshape(b, t, h, w)


def make_mask(
    strategy: str,
    features: torch.Tensor,
    ratio: float,
    generator: torch.Generator | None = None,
    **sgm_options: float,
) -> torch.Tensor:
    """Mask (B, T, H, W) for ``strategy`` in ``STRATEGIES`` ("none" masks nothing)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown masking strategy {strategy!r}; choose from {STRATEGIES}")
    b, _, t, h, w = features.shape
    if strategy == "none" or ratio == 0:
        return torch.zeros(b, t, h, w, dtype=torch.bool)
    if strategy == "random":
        return random_mask((b, t, h, w), ratio, generator)
    return semantic_guided_mask(features, ratio, generator, **sgm_options)
