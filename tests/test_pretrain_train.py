"""Pre-training loop: loss goes down, resume equality, 2-process == 1-process, CLI, released keys."""

import argparse
import csv
import importlib.util
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pydantic import ValidationError
from safetensors.torch import load_file

from recot.model.compressor import ReCoTCompressor
from recot.pretrain.commands import add_commands
from recot.pretrain.data import FeatureStore, FrozenTower, global_batch_refs, list_media
from recot.pretrain.train import (
    COMPRESSOR_FILE,
    DTSConfig,
    OptimConfig,
    PretrainConfig,
    batch_loss,
    build_modules,
    load_config,
    train,
)

C = 32


def make_store(seed: int = 0) -> FeatureStore:
    """Tiny feature store: 3 "videos" of a feature map drifting sideways, 2 images."""
    g = torch.Generator().manual_seed(seed)
    videos = []
    for _ in range(3):
        base = torch.randn(C, 4, 12, generator=g)
        videos.append(torch.stack([base[:, :, i % 8 : i % 8 + 4] for i in range(12)]).half())
    images = [torch.randn(1, C, 4, 4, generator=g).half() for _ in range(2)]
    return FeatureStore(videos, images, frames=4)


def make_cfg(out, steps=6, batch=4, **kw) -> PretrainConfig:
    return PretrainConfig(
        output_dir=str(out),
        checkpoint_every=kw.pop("checkpoint_every", 3),
        compressor={"norm_groups": 8},
        dts=DTSConfig(attn_dim=16),
        optim=OptimConfig(steps=steps, batch_size=batch, lr=2e-3, warmup_steps=2),
        **kw,
    )


def test_batches_are_deterministic_and_mix_images():
    store = make_store()
    a = global_batch_refs(store, 0, 5, 64, 0.25)
    assert a == global_batch_refs(store, 0, 5, 64, 0.25)
    assert a != global_batch_refs(store, 0, 6, 64, 0.25)
    share = np.mean([r.is_image for r in global_batch_refs(store, 0, 0, 2000, 0.25)])
    assert 0.2 < share < 0.3
    assert not any(r.is_image for r in global_batch_refs(store, 0, 0, 50, 0.0))


def test_few_steps_reduce_loss_on_fixed_batch(tmp_path):
    store = make_store()
    cfg = make_cfg(tmp_path)
    torch.manual_seed(0)
    modules = build_modules(store.channels, cfg)
    refs = global_batch_refs(store, 0, 0, 4, 0.25)
    opt = torch.optim.AdamW(modules.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        loss, _ = batch_loss(modules, store, refs, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_resume_continues_exact_loss_curve(tmp_path):
    store = make_store()
    full = train(make_cfg(tmp_path / "full", steps=6), store=store, progress=False)
    part = train(make_cfg(tmp_path / "part", steps=6), store=store, stop_after=3, progress=False)
    assert len(part) == 3
    rest = train(make_cfg(tmp_path / "part", steps=6), resume=True, store=store, progress=False)
    assert [r["step"] for r in rest] == [4, 5, 6]
    assert [r["loss"] for r in part + rest] == [r["loss"] for r in full]
    # The CSV log of the resumed run is the uninterrupted one, row for row.
    with open(tmp_path / "part" / "metrics.csv") as f:
        logged = [float(r["loss"]) for r in csv.DictReader(f)]
    assert logged == pytest.approx([r["loss"] for r in full], abs=0, rel=1e-12)
    a = load_file(tmp_path / "full" / COMPRESSOR_FILE)
    b = load_file(tmp_path / "part" / COMPRESSOR_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, result_file: str, image_ratio: float = 0.25) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        rows = train(make_cfg(out, steps=4, data={"image_ratio": image_ratio}), store=make_store(), progress=False)
        if rank == 0:
            torch.save(rows, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    single = train(make_cfg(tmp_path / "one", steps=4), store=make_store(), progress=False)
    result = tmp_path / "rows.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), str(result)), nprocs=2, join=True)
    double = torch.load(result)
    assert [r["loss"] for r in double] == pytest.approx([r["loss"] for r in single], rel=1e-4)
    one = load_file(tmp_path / "one" / COMPRESSOR_FILE)
    two = load_file(tmp_path / "two" / COMPRESSOR_FILE)
    for k in one:
        # Adam turns the all-reduce's rounding noise on near-zero gradients into steps of up to lr (2e-3, warming
        # up): 1.2e-5 was measured on one CPU, so the weights are compared to a tenth of one warm-up step.
        torch.testing.assert_close(one[k], two[k], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_two_processes_when_a_rank_draws_only_images(tmp_path):
    # At image_ratio 0.75 the first global batch is (image, image | video, image): rank 0's
    # DTS gets no gradient, rank 1's does. The ranks must still agree on the update.
    cfg = make_cfg(tmp_path / "one", steps=4, data={"image_ratio": 0.75})
    assert [r.is_image for r in global_batch_refs(make_store(), 0, 0, 4, 0.75)] == [True, True, False, True]
    single = train(cfg, store=make_store(), progress=False)
    result = tmp_path / "rows.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "two"), str(result), 0.75), nprocs=2, join=True)
    double = torch.load(result)
    assert [r["dts_loss"] for r in double] == pytest.approx([r["dts_loss"] for r in single], rel=1e-4)
    assert [r["loss"] for r in double] == pytest.approx([r["loss"] for r in single], rel=1e-4)
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)["modules"]
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)["modules"]
    dts = [k for k in one if k.startswith("dts.")]
    assert dts
    for k in dts:
        torch.testing.assert_close(one[k], two[k], rtol=1e-3, atol=1e-5)


def test_exported_weights_load_as_released_keys(tmp_path):
    store = make_store()
    train(make_cfg(tmp_path, steps=2), store=store, progress=False)
    state = load_file(tmp_path / COMPRESSOR_FILE)
    assert state and all(k.startswith("model.sae.") for k in state)
    assert "model.sae.temporal_encoding" in state and "model.sae.encoder.0.q.weight" in state
    comp = ReCoTCompressor(C, norm_groups=8, official_compat=False)
    comp.load_state_dict({k[len("model.sae."):]: v for k, v in state.items()})
    assert torch.equal(comp.temporal_encoding, state["model.sae.temporal_encoding"])
    # Pre-training moved the weights away from their initialisation.
    torch.manual_seed(0)
    fresh = build_modules(C, make_cfg(tmp_path, steps=2)).recon.compressor
    assert not torch.equal(fresh.encoder[0].q.weight, comp.encoder[0].q.weight)


def _write_media(folder):
    import av
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    with av.open(str(folder / "clip.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(16):
            frame = np.zeros((64, 64, 3), np.uint8)
            frame[:, :] = (40, 80, 120)
            frame[20:40, 4 * i : 4 * i + 16] = 255  # a moving bar
            for p in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / "still.png")


def test_cli_end_to_end_with_tiny_siglip(tmp_path):
    _write_media(tmp_path / "media")
    (tmp_path / "list.txt").write_text("media/clip.mp4\nmedia/still.png\n")
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "output_dir: {out}\ncheckpoint_every: 2\n"
        "data: {{paths: [list.txt], fps: 8, image_ratio: 0.5}}\n"
        "backbone: {{name: siglip, preset: tiny}}\n"
        "dts: {{attn_dim: 16}}\n"
        "optim: {{steps: 3, batch_size: 2, warmup_steps: 1}}\n".format(out=tmp_path / "run")
    )
    videos, images = list_media([tmp_path / "list.txt"])
    assert [p.name for p in videos] == ["clip.mp4"] and [p.name for p in images] == ["still.png"]
    assert load_config(config).backbone.name == "siglip"
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["pretrain-compressor", "--config", str(config), "--no-progress"])
    assert args.func(args) == 0
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(np.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    cached = list((tmp_path / "run" / "features").glob("*.pt"))
    assert len(cached) == 2
    video_feats = max((torch.load(p) for p in cached), key=lambda t: t.shape[0])
    assert video_feats.shape == (16, 64, 6, 6)  # 16 frames at 8 fps, tiny SigLIP: 64 channels, 6x6 grid
    if importlib.util.find_spec("tensorboard") is not None:  # the train extra installs it
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
        losses = [e.value for e in events.Scalars("pretrain/loss")]
        np.testing.assert_allclose(losses, [float(r["loss"]) for r in rows], rtol=1e-5)
    # Resume after the end is a no-op that keeps the log.
    args = parser.parse_args(["pretrain-compressor", "--config", str(config), "--resume", "--no-progress"])
    assert args.func(args) == 0
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_toml_config_and_relative_paths(tmp_path):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('output_dir = "o"\n[data]\npaths = ["media"]\n[masking]\nstrategy = "random"\nratio = 0.75\n')
    cfg = load_config(cfg_file)
    assert cfg.masking.strategy == "random" and cfg.masking.ratio == 0.75
    assert cfg.data.paths == [str(tmp_path / "media")]
    with pytest.raises(ValidationError, match=r"masking\.strategy"):
        PretrainConfig.model_validate({"masking": {"strategy": "bogus"}})


def test_pretrained_compressor_loads_into_full_model(tmp_path):
    from recot.config import VideoXLProConfig
    from recot.model.checkpoint import CheckpointError, from_released_key
    from recot.model.videoxl_pro import VideoXLPro

    config = VideoXLProConfig.from_preset("tiny", official_compat=False)
    g = torch.Generator().manual_seed(0)
    videos = [torch.randn(8, config.vision_hidden_size, 3, 3, generator=g).half() for _ in range(2)]
    store = FeatureStore(videos, [], frames=4)
    cfg = PretrainConfig(
        output_dir=str(tmp_path),
        compressor={"norm_groups": config.compressor_norm_groups},
        dts=DTSConfig(enabled=False),
        optim=OptimConfig(steps=2, batch_size=2, warmup_steps=1),
    )
    train(cfg, store=store, progress=False)
    state = load_file(tmp_path / COMPRESSOR_FILE)
    model = VideoXLPro(config)
    model.load_compressor(tmp_path / COMPRESSOR_FILE)
    for k, v in state.items():
        assert torch.equal(model.state_dict()[from_released_key(k)], v)
    # Weights of another width are refused by name.
    with pytest.raises(CheckpointError, match=r"wrong shape \(\d+\): model\.sae\."):
        VideoXLPro(VideoXLProConfig.from_preset("small")).load_compressor(tmp_path / COMPRESSOR_FILE)
    clip = torch.randn(1, config.vision_hidden_size, 4, 3, 3)
    with torch.no_grad():
        assert model.compressor(clip).shape == (1, config.vision_hidden_size, 1, 3, 3)
    # Weights trained without the residual path are refused by a model that adds it, and the other way round.
    with pytest.raises(CheckpointError, match="trained with residual=false, but the model's compressor_residual is True"):
        VideoXLPro(VideoXLProConfig.from_preset("tiny", official_compat=False, compressor_residual=True)).load_compressor(
            tmp_path / COMPRESSOR_FILE
        )
    cfg.compressor.residual, cfg.output_dir = True, str(tmp_path / "residual")
    train(cfg, store=store, progress=False)
    residual = VideoXLPro(VideoXLProConfig.from_preset("tiny", official_compat=False, compressor_residual=True))
    residual.load_compressor(tmp_path / "residual" / COMPRESSOR_FILE)
    with pytest.raises(CheckpointError, match="trained with residual=true, but the model's compressor_residual is False"):
        model.load_compressor(tmp_path / "residual" / COMPRESSOR_FILE)
    # Likewise the channels passed around the learned path: the file records them, a model with others refuses it.
    cfg.compressor.passthrough_channels, cfg.output_dir = 4, str(tmp_path / "passthrough")
    train(cfg, store=store, progress=False)
    passthrough = VideoXLProConfig.from_preset("tiny", official_compat=False, compressor_residual=True,
                                               compressor_passthrough_channels=4)  # fmt: skip
    VideoXLPro(passthrough).load_compressor(tmp_path / "passthrough" / COMPRESSOR_FILE)
    with pytest.raises(CheckpointError, match="trained with passthrough_channels=4, but the model's compressor_passthrough"):
        residual.load_compressor(tmp_path / "passthrough" / COMPRESSOR_FILE)
    with pytest.raises(CheckpointError, match="trained with passthrough_channels=0, but the model's compressor_passthrough"):
        VideoXLPro(passthrough).load_compressor(tmp_path / "residual" / COMPRESSOR_FILE)


def test_bad_config_files_are_named(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("masking: {strategy: bogus}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: masking\.strategy"):
        load_config(bad_yaml)
    broken = tmp_path / "broken.toml"
    broken.write_text("[optim\nsteps = 3\n")
    with pytest.raises(ValueError, match=r"cannot read pre-training config .*broken\.toml"):
        load_config(broken)
    with pytest.raises(ValueError, match=r"cannot read pre-training config .*missing\.yaml"):
        load_config(tmp_path / "missing.yaml")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["pretrain-compressor", "--config", str(bad_yaml)])
    assert args.func(args) == 1  # a bad input file (exit 2 is for bad flags)
    assert "recot pretrain-compressor: error:" in capsys.readouterr().err


def test_corrupt_feature_cache_is_recomputed(tmp_path):
    from recot.pretrain.data import extract_features

    _write_media(tmp_path / "media")
    tower = FrozenTower("siglip", preset="tiny")
    image = tmp_path / "media" / "still.png"
    first = extract_features(tower, image, False, 1.0, None, tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache").glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:20])
    with pytest.warns(UserWarning, match=r"feature cache .* of .*still\.png is unreadable"):
        again = extract_features(tower, image, False, 1.0, None, tmp_path / "cache")
    assert torch.equal(first, again)
    assert torch.equal(torch.load(cache_file), first)  # the cache file was rewritten


def test_missing_data_path_is_a_clean_error(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"output_dir: {tmp_path / 'run'}\ndata: {{paths: [nowhere]}}\n")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["pretrain-compressor", "--config", str(config), "--no-progress"])
    assert args.func(args) == 1
    assert "data path not found" in capsys.readouterr().err
