"""Shared builders of the training tests: a tiny conversation data set with generated videos, configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine_fixtures import write_video
from recot.train.config import TrainConfig


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two threads spin against each other on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ANSWERS = ["a red ball", "two blue cubes", "nothing moves", "a green line"]


def turns(question: str, answer: str) -> list[dict]:
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


def make_dataset(root: Path, rows: int = 4, with_text_row: bool = True, with_image_row: bool = False) -> Path:
    """``root/train.json``: ``rows`` video rows (4 videos), optionally a text-only and an image row."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        if not (root / f"v{i}.mp4").exists():
            write_video(root / f"v{i}.mp4", num_frames=8, size=(32, 24), fps=8, seed=i)
    data = [
        {"id": f"s{i}", "video": f"v{i % 4}.mp4", "conversations": turns("<image>\nWhat is shown?", ANSWERS[i % 4])}
        for i in range(rows)
    ]
    if with_text_row:
        data.append({"id": "t", "conversations": turns("Say hi", "hi")})
    if with_image_row:
        Image.new("RGB", (20, 20), (200, 10, 10)).save(root / "red.png")
        data.append({"id": "img", "image": "red.png", "conversations": turns("<image>\nColour?", "red")})
    path = root / "train.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def make_config(
    data_file: Path, out: Path, stage: str = "sft", steps: int = 4, batch: int = 4, **overrides
) -> TrainConfig:
    """A tiny-preset config that trains fast on the CPU; dict overrides merge into their section."""
    data = data_file
    raw = {
        "stage": stage,
        "output_dir": str(out),
        "checkpoint_every": 2,
        "model": {"preset": "tiny"},
        "data": {"train": [str(data)], "media_root": str(data.parent), "fps": 8, "max_frames": 4},
        "optim": {
            "steps": steps, "batch_size": batch, "warmup_steps": 1,
            "lr": {
                "projector": 1e-2, "language_model": 3e-3, "compressor": 1e-3, "selector": 1e-3, "vision_tower": 1e-4,
            },
        },
    }  # fmt: skip
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return TrainConfig.model_validate(raw)


def write_yaml(cfg: TrainConfig, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def same_outputs(model_a: Path, model_b: Path, video: Path, rtol: float = 1e-3, atol: float = 1e-3) -> None:
    """Assert that two saved models give the same logits for a question about ``video``.

    Outputs, not weights: Adam turns rounding noise on parameters whose true gradient is zero (e.g. a bias
    that the selector's min-max normalisation cancels) into lr-sized steps that change no output. Every visual
    token is kept (``keep_ratio=1.0``): the selector's top-k is discrete, and that noise can flip a near-tie
    between two tokens, which moved logits by 0.53 on one CPU (and by nothing on another).
    """
    from recot.model.processor import VideoXLProProcessor
    from recot.model.videoxl_pro import VideoXLPro
    from recot.video import read_frames

    a, b = VideoXLPro.from_pretrained(model_a), VideoXLPro.from_pretrained(model_b)
    processor = VideoXLProProcessor.from_pretrained(model_a)
    batch = read_frames(video, fps=8, max_frames=4, size=a.config.image_size)
    inputs = processor("What is shown?", batch.frames, list(batch.timestamps))
    with torch.no_grad():
        torch.testing.assert_close(
            a(**inputs, keep_ratio=1.0).logits, b(**inputs, keep_ratio=1.0).logits, rtol=rtol, atol=atol
        )
