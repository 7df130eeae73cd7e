"""Dynamic Token Synthesizer: shapes, frames that differ, learning from real clips."""

import torch

from recot.pretrain.dts import DynamicTokenSynthesizer, dts_prediction_loss, sincos_2d


def test_dts_shape_and_frames_differ():
    torch.manual_seed(0)
    dts = DynamicTokenSynthesizer(32, frames=4, attn_dim=16)
    img = torch.randn(2, 32, 5, 6)
    clip = dts(img)
    assert clip.shape == (2, 32, 4, 5, 6)
    scale = img.abs().mean()
    for t in range(4):
        assert (clip[:, :, t] - img).abs().mean() > 1e-3 * scale
        for s in range(t + 1, 4):
            assert (clip[:, :, t] - clip[:, :, s]).abs().mean() > 1e-3 * scale


def test_position_encoding_distinguishes_positions():
    enc = sincos_2d(4, 5, 16)
    assert enc.shape == (20, 16)
    assert torch.cdist(enc, enc).add(torch.eye(20)).min() > 1e-3


def test_dts_learns_to_predict_motion():
    # Real "clips": a random feature map shifting one column per frame.
    torch.manual_seed(0)
    base = torch.randn(8, 16, 4, 8)
    clip = torch.stack([base[..., t : t + 4] for t in range(4)], dim=2)  # (8, 16, 4, 4, 4)
    dts = DynamicTokenSynthesizer(16, frames=4, attn_dim=16)
    opt = torch.optim.Adam(dts.parameters(), lr=3e-3)
    first = dts_prediction_loss(dts, clip).mean().item()
    for _ in range(150):
        loss = dts_prediction_loss(dts, clip).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
