"""The project's default model, used when no ``--model`` is given.

There are no trained weights yet, so the default is the ``small`` preset with
weights drawn from a fixed seed and the offline byte tokenizer. It is written
once into the cache directory as an ordinary checkpoint (``save_pretrained``)
and loaded from there afterwards, so every run gives the same (meaningless)
answers and the encode cache keys stay stable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from recot.config import VideoXLProConfig
from recot.data.atomic import build_once
from recot.engine.cache import resolve_cache_dir
from recot.model.tokenizer import build_byte_tokenizer
from recot.model.videoxl_pro import VideoXLPro

DEFAULT_PRESET = "small"
DEFAULT_SEED = 0
NOTICE = (
    "recot: no --model given: using the built-in UNTRAINED '{preset}' model (random weights, seed {seed}); "
    "answers are meaningless. Pass --model DIR for a trained checkpoint."
)


def default_model_dir(cache_dir: str | Path | None = None, announce: bool = True) -> Path:
    """The default model's checkpoint directory, built on first use (safe across processes).

    With ``announce``, says on stderr that the weights are untrained.
    """
    root = resolve_cache_dir(cache_dir) / "models"
    target = root / f"untrained-{DEFAULT_PRESET}-seed{DEFAULT_SEED}"
    if announce:
        print(NOTICE.format(preset=DEFAULT_PRESET, seed=DEFAULT_SEED), file=sys.stderr)
    # save_pretrained renames a finished directory into place, so its existence means complete.
    return build_once(target, lambda: build_default_model().save_pretrained(target, tokenizer=build_byte_tokenizer()))


def build_default_model() -> VideoXLPro:
    """The untrained default model in memory: the preset, initialised from ``DEFAULT_SEED``."""
    config = VideoXLProConfig.from_preset(DEFAULT_PRESET, extra={"untrained": True, "seed": DEFAULT_SEED})
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(DEFAULT_SEED)
        return VideoXLPro(config).eval()
