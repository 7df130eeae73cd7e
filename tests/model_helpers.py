"""Small shared builders for model tests: tiny seeded models, processors, frames."""

from __future__ import annotations

import numpy as np
import torch

from recot import VideoXLPro, VideoXLProConfig, VideoXLProProcessor
from recot.model.tokenizer import build_byte_tokenizer


def randomize(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Perturb every parameter (norm weights included) so tests see non-trivial values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def tiny_model(seed: int = 0, **overrides) -> VideoXLPro:
    torch.manual_seed(seed)
    model = VideoXLPro(VideoXLProConfig.from_preset("tiny", **overrides))
    randomize(model, seed)
    return model.eval()


def tiny_processor(config: VideoXLProConfig) -> VideoXLProProcessor:
    return VideoXLProProcessor(build_byte_tokenizer(), config)


def random_frames(n: int, height: int = 40, width: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)
