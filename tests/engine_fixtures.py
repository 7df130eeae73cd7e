"""Shared pieces of the engine tests: a tiny model, its processor and small generated videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch

from recot import VideoXLPro, VideoXLProConfig, VideoXLProProcessor
from recot.engine import EncodingCache, VideoChat
from recot.model.tokenizer import build_byte_tokenizer


def write_video(path: Path, num_frames: int = 48, size: tuple[int, int] = (64, 48), fps: int = 30, seed: int = 0) -> Path:
    """An h264 video whose frames are smooth colour gradients that change every frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (3,))
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            frame = np.stack([(xs * 3 + i * 5 + base[0]) % 256, (ys * 4 + i * 3 + base[1]) % 256,
                              np.full_like(xs, (i * 11 + base[2]) % 256)], axis=-1).astype(np.uint8)  # fmt: skip
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def tiny_model_and_processor(seed: int = 0, **overrides: object) -> tuple[VideoXLPro, VideoXLProProcessor]:
    """The tiny preset with weights from ``seed`` and the byte tokenizer."""
    config = VideoXLProConfig.from_preset("tiny", **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoXLPro(config).eval()
    return model, VideoXLProProcessor(build_byte_tokenizer(), config)


def tiny_chat(cache_dir: Path | None, max_bytes: int | str = "1GB", **overrides: object) -> VideoChat:
    model, processor = tiny_model_and_processor(**overrides)
    cache = EncodingCache(cache_dir, max_bytes) if cache_dir is not None else None
    return VideoChat(model, processor, cache=cache)


class CallCounter:
    """Counts forward calls of a module (and the frames it saw) through a forward hook."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.frames = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.calls += 1
        self.frames += args[0].shape[0]
