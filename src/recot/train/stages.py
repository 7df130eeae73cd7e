"""Building the model for a stage: load weights, freeze, add LoRA adapters, group parameters by learning rate.

Stages (``TrainConfig.stage``):

* ``align``: only the projector learns; vision tower, compressor, selector and LLM are frozen.
* ``sft``: LLM, compressor, selector and projector learn (the vision tower too with
  ``train_vision_tower``); with ``lora.enabled`` the LLM's weights stay frozen and
  LoRA adapters on its linear layers learn instead (optionally on the compressor's
  projections too).

LoRA comes from ``peft``: the whole :class:`VideoXLPro` is wrapped, so module names
and the forward code stay the same; :func:`merge_lora` folds the adapters into
the weights for ``save_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recot.config import VideoXLProConfig
from recot.model.checkpoint import parse_dtype
from recot.model.processor import VideoXLProProcessor
from recot.model.videoxl_pro import VideoXLPro
from recot.train.config import MODULES, TrainConfig

#: Layers of the compressor's temporal attention blocks that carry LoRA adapters (1-wide Conv1d). The spatial
#: blocks' 1x1x1 Conv3d projections are left out: peft 0.21 merges Conv3d adapters with a wrong shape.
COMPRESSOR_LORA_TARGETS = ("qkv", "proj_out")


def load_base_model(cfg: TrainConfig) -> tuple[VideoXLPro, VideoXLProProcessor]:
    """The starting model and its processor: a checkpoint directory, or a preset with weights from ``model.seed``.

    A ``model.compressor`` file (from ``recot pretrain-compressor``) replaces the compressor's weights, and a
    ``model.language_model`` directory (a Qwen2 ``save_pretrained``) the LLM's, which must have the same sizes.
    Raises :class:`recot.CheckpointError` for unreadable checkpoints, compressor files or LLM directories.
    """
    m = cfg.model
    dtype = parse_dtype(m.dtype)
    if m.path is not None:
        from recot.model.checkpoint import CheckpointError

        model = VideoXLPro.from_pretrained(m.path, dtype=dtype)
        try:
            processor = VideoXLProProcessor.from_pretrained(m.path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load the tokenizer of {m.path}: {exc}") from exc
    else:
        from recot.model.tokenizer import build_byte_tokenizer

        overrides: dict[str, Any] = {**m.config, "extra": {"seed": m.seed}}
        if m.official_compat is not None:
            overrides["official_compat"] = m.official_compat
        try:
            config = VideoXLProConfig.from_preset(m.preset or "", **overrides)
        except KeyError as exc:
            raise ValueError(f"model.preset: {exc.args[0]}") from exc
        except TypeError as exc:  # a field VideoXLProConfig does not have
            raise ValueError(f"model.config: {exc}") from exc
        # Seeded weights; an EfficientNet tower gets its ImageNet weights.
        model = VideoXLPro.from_config(config, m.seed).to(dtype)
        processor = VideoXLProProcessor(build_byte_tokenizer(), config)
    if m.compressor is not None:
        model.load_compressor(m.compressor)
    if m.language_model is not None:
        load_language_model(model, m.language_model)
    return model, processor


def load_language_model(model: VideoXLPro, path: str) -> None:
    """Replace ``model.language_model``'s weights by those of the Qwen2 directory ``path`` (same sizes, strict)."""
    from transformers import Qwen2ForCausalLM

    from recot.model.checkpoint import CheckpointError

    if not (Path(path) / "config.json").is_file():  # else transformers would take the path for a hub repo id
        raise CheckpointError(f"{path} (model.language_model) is not a model directory: it has no config.json")
    try:
        llm = Qwen2ForCausalLM.from_pretrained(path, dtype=model.dtype)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load {path} (model.language_model): {exc}") from exc
    ours, theirs = model.language_model.state_dict(), llm.state_dict()
    problems = [f"{k}: {tuple(theirs[k].shape)} here {tuple(t.shape)}" for k, t in ours.items()
                if k in theirs and theirs[k].shape != t.shape]  # fmt: skip
    problems += [f"{k}: missing" for k in ours if k not in theirs]
    problems += [f"{k}: not in this model's LLM" for k in theirs if k not in ours]
    if problems:
        raise CheckpointError(f"{path} (model.language_model) does not fit this model's LLM "
                              f"({len(problems)} tensors, e.g. {problems[0]})")  # fmt: skip
    model.language_model.load_state_dict(theirs, strict=True)


def lora_target_regex(cfg: TrainConfig, compressor_stages: int) -> str:
    """The module-name pattern of the layers that get adapters (matched against full names by ``peft``)."""
    llm = "|".join(cfg.lora.targets)
    pattern = rf"language_model\.model\.layers\.\d+\.(self_attn|mlp)\.({llm})"
    if cfg.lora.compressor:
        # Each stage is (spatial, temporal, conv): the temporal blocks are encoder.1, encoder.4, ...
        temporal = "|".join(str(3 * s + 1) for s in range(compressor_stages))
        pattern += rf"|compressor\.encoder\.({temporal})\.({'|'.join(COMPRESSOR_LORA_TARGETS)})"
    return pattern


@dataclass
class StagedModel:
    """The model prepared for a stage: ``module`` is what the trainer runs (the model or its peft wrapper)."""

    module: nn.Module
    model: VideoXLPro  # the underlying model (adapters injected in place when LoRA is on)
    lora: bool

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name in :class:`VideoXLPro`, parameter) of every parameter that learns."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]


def prepare_stage(model: VideoXLPro, cfg: TrainConfig) -> StagedModel:
    """Freeze what the stage does not train, add LoRA adapters when configured, enable gradient checkpointing."""
    trained = set(cfg.trainable_modules())
    model.requires_grad_(False)
    module: nn.Module = model
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=lora_target_regex(cfg, model.config.compressor_stages),
        )
        with torch.random.fork_rng(devices=[]):  # adapter init from the run's seed, independent of call order
            torch.manual_seed(cfg.seed)
            module = get_peft_model(model, lora)
        model = module.base_model.model  # type: ignore[assignment]
    # With LoRA, the LLM (and with lora.compressor the compressor) learns through its adapters only.
    adapted = {"language_model", "compressor"} if cfg.lora.compressor else {"language_model"}
    for name in MODULES:
        if name in trained and not (cfg.lora.enabled and name in adapted):
            getattr(model, name).requires_grad_(True)
    if cfg.lora.enabled:  # adapters learn; the layers they sit on stay frozen
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.requires_grad_(True)
    # Parameters the forward never uses (SigLIP's post-layernorm, kept for the checkpoint keys) get no gradient.
    if model.config.vision_tower == "siglip":
        model.vision_tower.siglip.post_layernorm.requires_grad_(False)
    if cfg.gradient_checkpointing and any(p.requires_grad for p in model.parameters()):
        llm = model.language_model
        enable_activation_checkpointing(llm)
        # That hook makes the embedding output require grad, for reentrant checkpointing; the non-reentrant kind
        # does not need it, and the time sequence is written in place into that output.
        llm.disable_input_require_grads()
    model.language_model.config.use_cache = False
    return StagedModel(module, model, cfg.lora.enabled)


def module_of(name: str) -> str:
    """Which of :data:`MODULES` a parameter name (of :class:`VideoXLPro`) belongs to."""
    top = name.split(".", 1)[0]
    if top not in MODULES:
        raise KeyError(f"parameter {name} belongs to no known module")
    return top


def parameter_groups(staged: StagedModel, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: per module its learning rate; weight decay on matrices only (not on biases and norms)."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in staged.trainable_named_parameters():
        groups.setdefault((module_of(name), p.dim() >= 2), []).append(p)
    return [
        {
            "params": params,
            "lr": cfg.optim.lr_of(module),
            "weight_decay": cfg.optim.weight_decay if decay else 0.0,
            "name": f"{module}{'' if decay else '.no_decay'}",
        }
        for (module, decay), params in sorted(groups.items())
    ]


def merge_lora(staged: StagedModel) -> VideoXLPro:
    """The plain model with the adapters folded into the weights (no-op without LoRA)."""
    if not staged.lora:
        return staged.model
    return staged.module.merge_and_unload()  # type: ignore[operator]


def enable_activation_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing on a transformers model, under either of its 5.x names
    (``gradient_checkpointing_enable`` became ``activation_checkpointing_enable``; 5.17 has only the first)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable({"use_reentrant": False})
