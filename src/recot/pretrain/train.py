"""The ReCoT pre-training loop: config, model building, distributed data-parallel steps, checkpoints, logs.

One process on CPU, or N processes (``torchrun``; gloo on CPU, NCCL on GPU)
unchanged: each rank takes a contiguous slice of the deterministic global
batch, losses are per-clip means averaged over the batch, and gradients are
all-reduced (averaged), so N ranks compute the same update as one process with
the same global batch.

Checkpoints (``<output>/checkpoint.pt``) hold model, decoder, DTS, mask token,
optimizer, scheduler, RNG states and the step, written atomically every
``checkpoint_every`` steps. Because batches and masks are pure functions of
(seed, step, sample), ``--resume`` continues the exact loss curve. The final
compressor is exported as ``compressor.safetensors`` with the released
checkpoint's keys (``model.sae.*``); ``VideoXLPro.load_compressor`` loads it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from recot.model.checkpoint import save_compressor
from recot.model.compressor import ReCoTCompressor
from recot.pretrain.data import (
    FeatureStore,
    FrozenTower,
    SampleRef,
    atomic_save,
    build_feature_store,
    global_batch_refs,
)
from recot.pretrain.dts import DynamicTokenSynthesizer, dts_prediction_loss
from recot.pretrain.masking import make_mask
from recot.pretrain.objective import MaskedReconstructionModel, ReCoTDecoder
from recot.training_utils import MetricsLog, read_config, warmup_cosine

COMPRESSOR_FILE = "compressor.safetensors"
METRIC_FIELDS = ["step", "loss", "recon", "masked_mse", "visible_mse", "dts_loss", "lr", "seconds"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """Where clips come from."""

    paths: list[str] = Field(default_factory=list, description="video/image files, folders, or .txt list files")
    fps: float = 2.0
    max_frames_per_video: int | None = 512
    image_ratio: float = Field(0.25, ge=0.0, le=1.0, description="share of samples that are DTS pseudo-clips")
    cache_dir: str | None = None  # default: <output_dir>/features


class BackboneConfig(_Section):
    """The frozen vision tower (see :class:`recot.pretrain.data.FrozenTower`)."""

    name: Literal["efficientnet-lite0", "siglip"] = "efficientnet-lite0"
    layer: Literal["blocks", "head"] = "blocks"
    preset: str = "tiny"
    seed: int = 0
    weights: str | None = None
    batch_size: int = 16


class CompressorConfig(_Section):
    """Compressor/decoder sizes; channels always equal the backbone's."""

    frames: int = 4
    stages: int = 2
    norm_groups: int = 32
    max_relative_position: int = 64
    official_compat: bool = False
    residual: bool = False  # the model config's compressor_residual: must match the model that loads the result
    passthrough_channels: int = 0  # likewise compressor_passthrough_channels
    visible_weight: float = 0.1


class MaskingConfig(_Section):
    """Masking strategy and SGM's knobs (see :mod:`recot.pretrain.masking`)."""

    strategy: Literal["sgm", "random", "none"] = "sgm"
    ratio: float = Field(0.5, ge=0.0, lt=1.0)
    temperature: float = 0.1
    temporal_weight: float = 0.5
    saliency_weight: float = 0.5


class DTSConfig(_Section):
    """Dynamic Token Synthesizer: on/off, width, weight of its video-prediction loss."""

    enabled: bool = True
    attn_dim: int = 64
    loss_weight: float = 1.0


class OptimConfig(_Section):
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    steps: int = 1000
    batch_size: int = 16  # global, across all processes
    lr: float = 3e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.05
    grad_clip: float = 1.0


class PretrainConfig(_Section):
    """Everything ``recot pretrain-compressor`` needs; load with :func:`load_config`."""

    output_dir: str = "runs/pretrain"
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 1
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    compressor: CompressorConfig = Field(default_factory=CompressorConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    dts: DTSConfig = Field(default_factory=DTSConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)


def load_config(path: str | Path) -> PretrainConfig:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config; relative data paths are from its folder.

    Raises ``ValueError`` naming the file and what is wrong with it.
    """
    path = Path(path)
    cfg = read_config(path, PretrainConfig, "pre-training config")
    base = path.parent
    cfg.data.paths = [p if Path(p).is_absolute() else str(base / p) for p in cfg.data.paths]
    return cfg


class PretrainModules(torch.nn.Module):
    """All trained parts: ``recon`` (compressor + decoder + mask token) and optional ``dts``."""

    def __init__(self, channels: int, cfg: PretrainConfig) -> None:
        super().__init__()
        c = cfg.compressor
        compressor = ReCoTCompressor(
            channels, c.frames, c.stages, c.norm_groups, c.max_relative_position, c.official_compat, c.residual,
            c.passthrough_channels,
        )
        decoder = ReCoTDecoder(channels, c.stages, c.norm_groups, c.max_relative_position)
        self.recon = MaskedReconstructionModel(compressor, decoder, channels, c.visible_weight)
        self.dts = DynamicTokenSynthesizer(channels, c.frames, cfg.dts.attn_dim) if cfg.dts.enabled else None


def build_modules(channels: int, cfg: PretrainConfig) -> PretrainModules:
    """Modules initialised from ``cfg.seed`` (identical on every rank)."""
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return PretrainModules(channels, cfg)


def lr_lambda(cfg: OptimConfig) -> Callable[[int], float]:
    """Multiplier of the base lr at a step: linear warm-up, then cosine to ``min_lr_ratio``."""
    return warmup_cosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)


def batch_loss(
    modules: PretrainModules,
    store: FeatureStore,
    refs: list[SampleRef],
    cfg: PretrainConfig,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean loss over ``refs`` (this rank's slice) and per-term means for logging.

    Video clips: masked reconstruction, plus DTS learning to predict the clip
    from its first frame. Images: DTS synthesises a (detached) pseudo-clip that
    is reconstructed like a video clip. Without DTS, images become static clips.
    Masks come from a generator seeded by each sample's own seed.
    """
    clips, dts_targets = [], []
    for ref in refs:
        if ref.is_image:
            img = store.image(ref.index)
            if modules.dts is not None:
                with torch.no_grad():
                    clips.append(modules.dts(img[None].to(device))[0].cpu())
            else:
                clips.append(img[:, None].expand(-1, cfg.compressor.frames, -1, -1))
        else:
            clip = store.clip(ref.index)
            clips.append(clip)
            dts_targets.append(clip)
    x = torch.stack(clips)
    m = cfg.masking
    masks = [
        make_mask(
            m.strategy, x[i : i + 1], m.ratio, torch.Generator().manual_seed(ref.seed),
            **({"temperature": m.temperature, "temporal_weight": m.temporal_weight, "saliency_weight": m.saliency_weight}
               if m.strategy == "sgm" else {}),
        )
        for i, ref in enumerate(refs)
    ]
    # Masks are drawn on the CPU (seeded CPU generators), then everything moves to the device.
    out = modules.recon(x.to(device), torch.cat(masks).to(device))
    n = len(refs)
    loss = out.loss.sum() / n
    dts_sum = torch.zeros(())
    if modules.dts is not None and dts_targets:
        dts_sum = dts_prediction_loss(modules.dts, torch.stack(dts_targets).to(device)).sum()
        loss = loss + cfg.dts.loss_weight * dts_sum / n
    stats = {
        "recon": out.loss.detach().sum().item(),
        "masked_mse": out.masked_mse.detach().sum().item(),
        "visible_mse": out.visible_mse.detach().sum().item(),
        "dts_loss": dts_sum.detach().item(),
    }
    return loss, stats


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def train(
    cfg: PretrainConfig,
    resume: bool = False,
    store: FeatureStore | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Run pre-training; returns this run's metric rows (global means per step).

    Args:
        cfg: the configuration.
        resume: continue from ``<output_dir>/checkpoint.pt`` if it exists.
        store: pre-built features (skips the backbone; used by tests and the benchmark).
        stop_after: stop (after checkpointing) once this step is reached, to simulate an interruption.
        progress: show a progress bar on rank 0.

    If ``torch.distributed`` is initialised, the run is data-parallel over its ranks.
    """
    rank, world = _dist_info()
    if cfg.optim.batch_size % world:
        raise ValueError(f"global batch {cfg.optim.batch_size} is not divisible by {world} processes")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if store is None:
        store = _build_store_distributed(cfg, out, rank, world, progress)

    torch.manual_seed(cfg.seed + rank)
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    modules = build_modules(store.channels, cfg).to(device)
    params = [p for p in modules.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.optim.lr,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.optim))

    ckpt_path = out / "checkpoint.pt"
    start = 0
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        modules.load_state_dict(ckpt["modules"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"][min(rank, len(ckpt["rng"]) - 1)])
        start = ckpt["step"]

    log = MetricsLog(out, METRIC_FIELDS, start, enabled=rank == 0, tag="pretrain")
    per_rank = cfg.optim.batch_size // world
    rows: list[dict[str, float]] = []
    end = cfg.optim.steps if stop_after is None else min(stop_after, cfg.optim.steps)
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.optim.steps, initial=start, desc="pretrain", disable=not (progress and rank == 0))
    modules.train()
    for step in range(start, end):
        t0 = time.perf_counter()
        refs = global_batch_refs(store, cfg.seed, step, cfg.optim.batch_size, cfg.data.image_ratio)
        mine = refs[rank * per_rank : (rank + 1) * per_rank]
        loss, stats = batch_loss(modules, store, mine, cfg, device)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        totals = torch.tensor([loss.item() * per_rank, stats["recon"], stats["masked_mse"], stats["visible_mse"], stats["dts_loss"]], dtype=torch.float64)
        if world > 1:
            _all_reduce_grads(params, world, device)
            totals = totals.to(device)
            dist.all_reduce(totals)
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        means = (totals.cpu() / cfg.optim.batch_size).tolist()
        row = dict(zip(METRIC_FIELDS, [step + 1, *means, lr, time.perf_counter() - t0], strict=False))
        rows.append(row)
        if (step + 1) % cfg.log_every == 0 or step + 1 == end:
            log.write(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == end:
            _save_checkpoint(ckpt_path, modules, optimizer, scheduler, done, cfg, rank, world)
    bar.close()
    log.close()
    if rank == 0 and end == cfg.optim.steps:
        save_compressor(modules.recon.compressor, out / COMPRESSOR_FILE)
    return rows


def _all_reduce_grads(params: list[torch.nn.Parameter], world: int, device: torch.device) -> None:
    """Average gradients over the ranks.

    A parameter that this rank's samples did not reach has no gradient (e.g.
    DTS, whose loss comes from video clips, on a rank that drew only images),
    while another rank's may have one. Every rank learns which parameters have a
    gradient anywhere; those get a zero gradient where missing, so all ranks make
    the same collective calls and the same update as one process with the whole batch.
    """
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(present)
    for p, anywhere in zip(params, present.tolist(), strict=False):
        if not anywhere:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world)


def _save_checkpoint(
    path: Path,
    modules: PretrainModules,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    cfg: PretrainConfig,
    rank: int,
    world: int,
) -> None:
    """Write the checkpoint on rank 0 (with every rank's RNG state); all ranks wait for it."""
    states = [_rng_state()]
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, states[0])
        states = gathered
    if rank == 0:
        atomic_save(
            {
                "step": step,
                "modules": modules.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": states,
                "config": cfg.model_dump(),
            },
            path,
        )
    if world > 1:
        dist.barrier()


def _build_store_distributed(
    cfg: PretrainConfig, out: Path, rank: int, world: int, progress: bool = True
) -> FeatureStore:
    """Rank 0 fills the feature cache first (with a progress bar when ``progress``); the others then read it."""
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "features"
    b = cfg.backbone

    def build() -> FeatureStore:
        tower = FrozenTower(b.name, b.layer, b.preset, b.seed, b.weights, b.batch_size)
        return build_feature_store(
            tower, cfg.data.paths, cfg.data.fps, cfg.data.max_frames_per_video, cache, cfg.compressor.frames,
            progress and rank == 0,
        )

    if world > 1 and rank != 0:
        dist.barrier()
        return build()
    store = build()
    if world > 1:
        dist.barrier()
    return store


def init_distributed_from_env() -> bool:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1); gloo on CPU, NCCL on GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True
