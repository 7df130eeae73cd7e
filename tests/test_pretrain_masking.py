"""Semantic-Guided Masking and random masking: exact ratio, determinism, redundancy steering."""

import pytest
import torch

from recot.pretrain.masking import make_mask, num_masked, random_mask, redundancy_scores, semantic_guided_mask


def _changing_clip(c=32, t=4, h=6, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, t, h, w, generator=g)


@pytest.mark.parametrize("strategy", ["sgm", "random"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_mask_has_configured_ratio(strategy, ratio):
    x = torch.randn(3, 32, 4, 6, 6)
    mask = make_mask(strategy, x, ratio, torch.Generator().manual_seed(1))
    assert mask.shape == (3, 4, 6, 6) and mask.dtype == torch.bool
    assert mask.sum(dim=(1, 2, 3)).tolist() == [round(ratio * 144)] * 3


def test_none_masks_nothing_and_ratio_bounds():
    x = torch.randn(2, 32, 4, 3, 3)
    assert not make_mask("none", x, 0.5).any()
    assert num_masked(36, 0.5) == 18
    with pytest.raises(ValueError):
        num_masked(36, 1.0)


@pytest.mark.parametrize("strategy", ["sgm", "random"])
def test_masks_deterministic_for_a_seed(strategy):
    x = torch.randn(2, 32, 4, 6, 6)
    a = make_mask(strategy, x, 0.5, torch.Generator().manual_seed(7))
    b = make_mask(strategy, x, 0.5, torch.Generator().manual_seed(7))
    c = make_mask(strategy, x, 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_static_tokens_score_more_redundant():
    changing = _changing_clip()
    static = changing[:, :, :1].expand(-1, -1, 4, -1, -1).contiguous()
    r_static = redundancy_scores(static)
    r_changing = redundancy_scores(changing)
    assert r_static.mean() > r_changing.mean() + 0.3


def test_sgm_masks_static_region_more_than_changing_region():
    # Left half of the frame is frozen over time, right half changes every frame.
    x = _changing_clip(h=6, w=8)
    x[:, :, :, :, :4] = x[:, :, :1, :, :4]
    counts = torch.zeros(2)
    for seed in range(20):
        m = semantic_guided_mask(x, 0.5, torch.Generator().manual_seed(seed))
        counts += torch.stack([m[..., :4].sum(), m[..., 4:].sum()]).float()
    static_share = counts[0] / counts.sum()
    assert static_share > 0.75
    # Uniform random masking has no such preference.
    rcounts = torch.zeros(2)
    for seed in range(20):
        m = random_mask((1, 4, 6, 8), 0.5, torch.Generator().manual_seed(seed))
        rcounts += torch.stack([m[..., :4].sum(), m[..., 4:].sum()]).float()
    assert abs(rcounts[0] / rcounts.sum() - 0.5) < 0.06


def test_sgm_batch_scope_masks_static_clip_more():
    changing = _changing_clip(seed=1)
    static = _changing_clip(seed=2)[:, :, :1].expand(-1, -1, 4, -1, -1)
    x = torch.cat([static, changing])
    m = semantic_guided_mask(x, 0.5, torch.Generator().manual_seed(0), scope="batch")
    assert m.sum() == round(0.5 * m.numel())
    assert m[0].sum() > 1.5 * m[1].sum()


def test_temperature_controls_steering():
    x = _changing_clip(h=6, w=8)
    x[:, :, :, :, :4] = x[:, :, :1, :, :4]
    hot = semantic_guided_mask(x, 0.5, torch.Generator().manual_seed(0), temperature=100.0)
    cold = semantic_guided_mask(x, 0.5, torch.Generator().manual_seed(0), temperature=0.05)
    assert cold[..., :4].sum() > hot[..., :4].sum()


def test_bad_arguments_are_named():
    x = torch.randn(1, 8, 4, 3, 3)
    with pytest.raises(ValueError, match="unknown masking strategy 'blocks'"):
        make_mask("blocks", x, 0.0)  # even when nothing would be masked
    with pytest.raises(ValueError, match="SGM temperature must be > 0, got 0.0"):
        semantic_guided_mask(x, 0.5, temperature=0.0)
    with pytest.raises(ValueError, match=r"mask ratio must be in \[0, 1\), got 1.0"):
        make_mask("random", x, 1.0)
