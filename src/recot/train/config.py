"""The ``recot train`` configuration: one YAML or TOML file, validated with pydantic.

Sections: ``model`` (what to start from), ``data``, ``lora``, ``optim``, plus
top-level run settings (``stage``, ``output_dir``, ``seed``...). Example files:
``configs/train_align.yaml``, ``configs/train_sft.yaml``, ``configs/train_sft_lora.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recot.training_utils import read_config

#: The model's trainable parts, by attribute name of :class:`recot.model.videoxl_pro.VideoXLPro`.
MODULES = ("vision_tower", "compressor", "projector", "selector", "language_model")
#: What each stage trains (``sft`` adds ``vision_tower`` with ``train_vision_tower: true``).
STAGE_MODULES = {
    "align": ("projector",),
    "sft": ("compressor", "projector", "selector", "language_model"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    """Where the weights come from: a released-layout checkpoint, or a preset with seeded random weights."""

    path: str | None = Field(None, description="checkpoint directory in the released layout (save_pretrained)")
    preset: str | None = Field(None, description="VideoXLProConfig preset (tiny, small...) with the byte tokenizer")
    seed: int = 0
    official_compat: bool | None = Field(None, description="preset only: the released quirks (default: preset's)")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="preset only: VideoXLProConfig fields that replace the preset's "
        "(e.g. compressor_passthrough_channels)",
    )
    compressor: str | None = Field(None, description="compressor.safetensors from `recot pretrain-compressor`")
    language_model: str | None = Field(
        None, description="a Qwen2 directory (save_pretrained) whose weights replace the LLM's, e.g. from "
        "scripts/probe_time_lookup.py --save: an LLM that already finds a time in the timeline"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.path is None) == (self.preset is None):
            raise ValueError("give exactly one of model.path (a checkpoint directory) and model.preset")
        if self.config and self.path is not None:
            raise ValueError("model.config overrides a preset's fields; a checkpoint (model.path) has its own config")
        return self


class DataSection(_Section):
    """Conversation files, media, frame sampling (as ``recot ask``: ``fps``, capped at ``max_frames``)."""

    train: list[str] = Field(default_factory=list, description="JSON or JSONL files of conversation rows")
    media_root: str | None = None
    fps: float = Field(1.0, gt=0)
    max_frames: int | None = Field(64, ge=1)
    strict: bool = False
    check_media: bool = True
    feature_cache: bool = Field(False, description="cache the frozen vision tower's output per video (skips decoding)")
    feature_cache_dir: str | None = Field(None, description="default: <output_dir>/features")
    feature_workers: int = Field(
        0, ge=0, description="with feature_cache: processes that decode the videos to fill the cache before step 1 "
        "(0: each video is computed when a step first needs it)"
    )
    time_shift: int = Field(
        0, ge=0, description="move a video sample's timeline (its frames' times and every clock of its text) a "
        "seeded random 0..time_shift seconds later, as if it were a stretch of a longer video: a model trained on "
        "short videos then knows the clocks of long ones"
    )
    time_shift_share: float = Field(0.5, ge=0, le=1, description="share of the video samples that get a time shift")


class LoraSection(_Section):
    """LoRA adapters through ``peft`` on the LLM's linear layers (and optionally the compressor's)."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: float = 32.0
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="names of the LLM's linear layers that get adapters",
    )
    compressor: bool = Field(False, description="adapters on the compressor's 1x1 projections too (not full training)")


class OptimSection(_Section):
    """AdamW, linear warm-up then cosine to ``min_lr_ratio * lr``, gradient clipping."""

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1, description="global: samples per optimizer step over all processes")
    micro_batch_size: int = Field(1, ge=1, description="samples per forward pass (the LLM pads them into one batch)")
    lr: dict[str, float] = Field(
        default_factory=dict, description="per module: vision_tower, compressor, projector, selector, language_model"
    )
    default_lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    selector_loss_weight: float = Field(
        0.0, ge=0, description="weight of the selector's evidence loss (recot.model.selector.evidence_loss) on rows "
        "with an `evidence` field: the selector learns to keep the stretches of video the answers are read from"
    )

    @field_validator("lr")
    @classmethod
    def _known_modules(cls, lr: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(lr) - set(MODULES))
        if unknown:
            raise ValueError(f"unknown modules {unknown}; use {', '.join(MODULES)}")
        return lr

    def lr_of(self, module: str) -> float:
        return self.lr.get(module, self.default_lr)


class TrainConfig(_Section):
    """Everything ``recot train`` needs; load with :func:`load_train_config`."""

    stage: Literal["align", "sft"] = "sft"
    output_dir: str = "runs/train"
    seed: int = 0
    train_vision_tower: bool = Field(False, description="sft: train the vision tower too (its own lr)")
    trainable: list[str] | None = Field(None, description="override the stage's trainable modules")
    gradient_checkpointing: bool = True
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on a GPU that has it")
    keep_ratio_range: tuple[float, float] = Field((0.7, 0.99), description="selector keep ratio drawn per sample")
    max_visual_tokens: int | None = None
    encode_chunk_groups: int | None = Field(
        None,
        ge=1,
        description="cached features: groups per compressor pass, across a micro-batch's videos (default: the "
        "model's compressor_batch_size); larger means fewer, bigger passes (what a GPU step's time goes to)",
    )
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(1, ge=1)
    log_every: int = Field(1, ge=1)
    model: ModelSection
    data: DataSection = Field(default_factory=DataSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    optim: OptimSection = Field(default_factory=OptimSection)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        low, high = self.keep_ratio_range
        if not 0 < low <= high <= 1:
            raise ValueError(f"keep_ratio_range {self.keep_ratio_range} must satisfy 0 < low <= high <= 1")
        if self.trainable is not None:
            unknown = sorted(set(self.trainable) - set(MODULES))
            if unknown:
                raise ValueError(f"trainable has unknown modules {unknown}; use {', '.join(MODULES)}")
        if self.data.feature_cache and "vision_tower" in self.trainable_modules():
            raise ValueError("data.feature_cache needs a frozen vision tower (train_vision_tower: false)")
        if self.lora.enabled and "language_model" not in self.trainable_modules():
            raise ValueError("lora.enabled needs language_model among the trained modules (stage sft)")
        return self

    def trainable_modules(self) -> tuple[str, ...]:
        """Modules whose parameters (or, with LoRA, adapters) are trained."""
        if self.trainable is not None:
            return tuple(m for m in MODULES if m in self.trainable)
        modules = set(STAGE_MODULES[self.stage])
        if self.stage == "sft" and self.train_vision_tower:
            modules.add("vision_tower")
        return tuple(m for m in MODULES if m in modules)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a YAML/TOML training config; relative data, media and model paths are from its folder
    (``output_dir``, as in ``pretrain-compressor``, is from the working directory).

    Raises ``ValueError`` naming the file and the offending fields.
    """
    path = Path(path)
    cfg = read_config(path, TrainConfig, "training config")
    base = path.parent

    def resolve(p: str | None) -> str | None:
        return p if p is None or Path(p).is_absolute() else str(base / p)

    cfg.data.train = [str(resolve(p)) for p in cfg.data.train]
    cfg.data.media_root = resolve(cfg.data.media_root)
    cfg.model.path = resolve(cfg.model.path)
    cfg.model.compressor = resolve(cfg.model.compressor)
    cfg.model.language_model = resolve(cfg.model.language_model)
    return cfg
