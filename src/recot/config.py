"""One configuration for the whole Video-XL-Pro pipeline, with named presets.

Every size used anywhere in the model comes from :class:`VideoXLProConfig`. It
converts to the transformers configs of its two backbones (SigLIP, Qwen2) and
to and from the ``config.json`` of the released checkpoint (``model_type``
``llava_qwen``, language-model fields flat at the top level).

The vision tower is SigLIP (the released model) or, with ``vision_tower =
"efficientnet-lite0"``, the frozen stem and first ``vision_num_layers`` MBConv
blocks of an ImageNet-trained EfficientNet-Lite0 (the ``lite`` CPU preset).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import Qwen2Config, SiglipVisionConfig

# The released model marks where the video goes in ``input_ids`` with this id
# (LLaVA's IMAGE_TOKEN_INDEX); it is never embedded.
IMAGE_TOKEN_INDEX = -200
# Text that stands for the video in a prompt before tokenisation.
IMAGE_TOKEN = "<image>"

_RELEASED_MODEL_TYPE = "llava_qwen"

#: Vision tower types (``VideoXLProConfig.vision_tower``).
VISION_TOWERS = ("siglip", "efficientnet-lite0")
#: (output channels, cumulative stride) after each MBConv block of EfficientNet-Lite0: the same table as
#: ``recot.model.efficientnet.block_outputs()`` (kept here because config sits below the model layer;
#: a test checks that the two agree).
EFFICIENTNET_LITE0_BLOCKS = (
    (16, 2), (24, 4), (24, 4), (40, 8), (40, 8), (80, 16), (80, 16), (80, 16),
    (112, 16), (112, 16), (112, 16), (192, 32), (192, 32), (192, 32), (192, 32), (320, 32),
)  # fmt: skip


@dataclass
class VideoXLProConfig:
    """Sizes and behaviour switches of a Video-XL-Pro model.

    Groups of fields: vision tower (SigLIP or EfficientNet-Lite0), the 27x27 -> 24x24 resize,
    ReCoT compressor, projector and pooling, query-aware selector, language
    model (Qwen2) and the timestamp text. ``official_compat`` switches on the
    released checkpoint's quirks (see ``docs/released-model.md``): the raw-reshape frame
    layout of a group, the transposed relative-position logit term of the
    temporal attention, and the swapped projections of the time-to-token
    window attention. It is on for every checkpoint in the released layout.
    """

    # Vision tower. ``vision_num_layers`` is the number of encoder layers that
    # RUN (the released model drops the last of SigLIP's 27). For
    # "efficientnet-lite0" it is the number of MBConv blocks kept, and
    # ``vision_hidden_size`` / ``patch_size`` must be that block's output
    # channels / cumulative stride (the SigLIP-only fields are then unused).
    vision_tower: str = "siglip"
    vision_hidden_size: int = 1152
    vision_intermediate_size: int = 4304
    vision_num_heads: int = 16
    vision_num_layers: int = 26
    vision_layer_norm_eps: float = 1e-6
    image_size: int = 384
    patch_size: int = 14
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    vision_batch_size: int = 60  # frames per vision-tower forward
    # EfficientNet only: this many hue bins of every feature-map cell are appended to the trunk's channels
    # (``vision_hidden_size`` = the block's channels + bins). At 48 px the ImageNet trunk keeps an object's
    # shape but little of its colour; the histogram keeps colour (recot.model.efficientnet.hue_histogram).
    vision_colour_bins: int = 0

    # Patch grid after the resize (27x27 -> 24x24 for the released model).
    grid_size: int = 24

    # ReCoT compressor: ``compressor_stages`` temporal-stride-2 stages turn
    # ``frames_per_group`` = 2**stages frames into one.
    frames_per_group: int = 4
    compressor_stages: int = 2
    compressor_norm_groups: int = 32
    compressor_max_relative_position: int = 64
    compressor_batch_size: int = 24  # groups per compressor forward
    # Add each group's mean input to the compressor's output (not in the released model; see ReCoTCompressor).
    compressor_residual: bool = False
    # The last N channels skip the compressor's learned path: its output there is their mean over each step's
    # frames (lite48's 16 hue bins: pre-training otherwise hides a small object's colour; see ReCoTCompressor).
    compressor_passthrough_channels: int = 0

    # Projector ("mlp2x_gelu") and spatial average pooling of the projected grid.
    projector_type: str = "mlp2x_gelu"
    pool_stride: int = 2

    # Query-aware selector.
    selector_num_heads: int = 4
    keep_ratio: float = 0.85  # default share of visual tokens kept (released: U(0.7, 0.99))
    selector_multiple: int = 16  # the number kept is rounded down to a multiple of this
    # The most visual tokens the LLM sees when a question sets no budget (None: as many as fit the context);
    # applied by the engine (recot.model.selector.context_budget), not by VideoXLPro itself or in training.
    # A model trained on short videos answers long ones best with an input as long as the ones it learned on.
    max_visual_tokens: int | None = None
    # Also drop the timestamp text of every group none of whose visual tokens were kept, so the LLM input stays
    # about as long as the budget at any video length (the released model keeps every group's timestamp).
    drop_empty_group_times: bool = False

    # Language model (Qwen2).
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    vocab_size: int = 151936
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True

    # Tokens and text.
    placeholder_token_id: int = 151654  # <|vision_pad|>
    image_token_index: int = IMAGE_TOKEN_INDEX
    # A ``str.format`` pattern of the group's start time ``t`` (seconds), or ``"clock"``: ``mm:ss`` below an
    # hour and ``h:mm:ss`` from there (5-7 byte tokens instead of 13, and the form answers are written in).
    time_format: str = "Time {t:06.1f}s:"
    # Add a fixed absolute-time vector (recot.model.time_vectors) to each group's timestamp text and visual tokens
    # and to every clock in the prompt, so a question's time and the group covering it look alike (not released).
    time_vector: bool = False
    # Add to every clock in the prompt the mean visual token of the group that covers its time, so "what is on
    # screen at 01:34?" carries what was on screen then (recot.model.time_vectors.covering_groups; not released).
    clock_grounding: bool = False
    system_prompt: str = "You are a helpful assistant."

    official_compat: bool = True

    # Free-form metadata kept through save/load (e.g. which preset, training notes).
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_mean = tuple(self.image_mean)
        self.image_std = tuple(self.image_std)
        self.validate()

    # ----- derived sizes -------------------------------------------------
    @property
    def patches_per_side(self) -> int:
        """Patches along one side of the vision tower's grid (27 for 384/14; EfficientNet: image / stride)."""
        return self.image_size // self.patch_size

    @property
    def pooled_side(self) -> int:
        """Side of the pooled token grid of one group (12 for the released model)."""
        return self.grid_size // self.pool_stride  # avg_pool2d floors

    @property
    def tokens_per_group(self) -> int:
        """Visual tokens the LLM sees per group of frames (144 for the released model)."""
        return self.pooled_side**2

    @property
    def uses_clock_times(self) -> bool:
        """Whether the model reads the prompt's clock times (``processor.clock_times``): time vectors or grounding."""
        return self.time_vector or self.clock_grounding

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when sizes do not fit together."""
        problems = []
        if self.vision_tower not in VISION_TOWERS:
            problems.append(f"vision_tower={self.vision_tower!r} is not one of {', '.join(VISION_TOWERS)}")
        elif self.vision_tower == "efficientnet-lite0":
            if not 1 <= self.vision_num_layers <= len(EFFICIENTNET_LITE0_BLOCKS):
                problems.append(
                    f"vision_num_layers={self.vision_num_layers} must be in [1, {len(EFFICIENTNET_LITE0_BLOCKS)}] "
                    "(MBConv blocks of EfficientNet-Lite0)"
                )
            else:
                channels, stride = EFFICIENTNET_LITE0_BLOCKS[self.vision_num_layers - 1]
                channels += self.vision_colour_bins
                if (self.vision_hidden_size, self.patch_size) != (channels, stride):
                    problems.append(
                        f"efficientnet-lite0 with {self.vision_num_layers} blocks and {self.vision_colour_bins} "
                        f"colour bins gives {channels} channels at stride {stride}; "
                        f"vision_hidden_size={self.vision_hidden_size} and patch_size={self.patch_size} must match"
                    )
                if self.image_size % stride:
                    # TF "SAME" padding would round the map up and shift cells off the pixel grid.
                    problems.append(f"image_size={self.image_size} must be a multiple of the stride {stride}")
        if self.vision_colour_bins < 0 or (self.vision_colour_bins and self.vision_tower != "efficientnet-lite0"):
            problems.append(f"vision_colour_bins={self.vision_colour_bins} needs vision_tower='efficientnet-lite0' "
                            "and must not be negative")  # fmt: skip
        if not 0 <= self.compressor_passthrough_channels <= self.vision_hidden_size:
            problems.append(
                f"compressor_passthrough_channels={self.compressor_passthrough_channels} must be in "
                f"[0, vision_hidden_size={self.vision_hidden_size}]"
            )
        if self.frames_per_group != 2**self.compressor_stages:
            problems.append(
                f"frames_per_group={self.frames_per_group} must equal 2**compressor_stages "
                f"(= {2 ** self.compressor_stages})"
            )
        if self.vision_hidden_size % self.compressor_norm_groups:
            problems.append(
                f"vision_hidden_size={self.vision_hidden_size} is not divisible by "
                f"compressor_norm_groups={self.compressor_norm_groups}"
            )
        if self.hidden_size % self.selector_num_heads:
            problems.append(
                f"hidden_size={self.hidden_size} is not divisible by selector_num_heads={self.selector_num_heads}"
            )
        if self.projector_type != "mlp2x_gelu":
            problems.append(f"projector_type={self.projector_type!r} is not supported (only 'mlp2x_gelu')")
        if not 0.0 < self.keep_ratio <= 1.0:
            problems.append(f"keep_ratio={self.keep_ratio} must be in (0, 1]")
        if self.max_visual_tokens is not None and self.max_visual_tokens < 1:
            problems.append(f"max_visual_tokens={self.max_visual_tokens} must be at least 1 (or None: what fits)")
        if problems:
            raise ValueError("invalid VideoXLProConfig: " + "; ".join(problems))

    # ----- presets --------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VideoXLProConfig:
        """Build a named preset (see ``PRESETS``), with fields overridden by keyword."""
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
        values = dict(PRESETS[name])
        values.update(overrides)
        values.setdefault("extra", {})
        values["extra"] = {**values["extra"], "preset": name}
        return cls(**values)

    # ----- backbone configs ----------------------------------------------
    def vision_config(self) -> SiglipVisionConfig:
        """The transformers config of the vision tower (only the layers that run, no head)."""
        return SiglipVisionConfig(
            hidden_size=self.vision_hidden_size,
            intermediate_size=self.vision_intermediate_size,
            num_hidden_layers=self.vision_num_layers,
            num_attention_heads=self.vision_num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            layer_norm_eps=self.vision_layer_norm_eps,
            hidden_act="gelu_pytorch_tanh",
            vision_use_head=False,
        )

    def text_config(self) -> Qwen2Config:
        """The transformers config of the Qwen2 language model."""
        return Qwen2Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            rms_norm_eps=self.rms_norm_eps,
            tie_word_embeddings=self.tie_word_embeddings,
            use_sliding_window=False,
            hidden_act="silu",
        )

    # ----- config.json ----------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """A ``config.json`` in the released layout plus a ``recot`` section with every field."""
        fields = dataclasses.asdict(self)
        if self.vision_tower == "siglip":
            # Written only when it is not the default, so that SigLIP configs stay byte for byte what
            # they were before the field existed (engine cache keys hash them).
            del fields["vision_tower"]
        # Likewise: left out while unset, so that older configs keep their bytes.
        for name in ("vision_colour_bins", "compressor_residual", "compressor_passthrough_channels", "time_vector",
                     "clock_grounding", "max_visual_tokens", "drop_empty_group_times"):
            if not fields[name]:
                del fields[name]
        return {
            "architectures": ["LlavaQwenForCausalLM"],
            "model_type": _RELEASED_MODEL_TYPE,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "mm_hidden_size": self.vision_hidden_size,
            "mm_projector_type": self.projector_type,
            "mm_spatial_pool_stride": self.pool_stride,
            "mm_spatial_pool_mode": "average",
            "mm_patch_merge_type": "unires",
            "mm_vision_select_layer": -2,
            "recot": fields,
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> VideoXLProConfig:
        """Read a ``config.json``: ours (with a ``recot`` section) or the released one.

        The released file carries the language-model sizes and a few ``mm_*``
        fields; everything else takes the released model's values (sizes the
        weights determine, such as the number of vision layers, are then read
        from the tensors by the loader).
        """
        if data.get("model_type") != _RELEASED_MODEL_TYPE:
            raise ValueError(
                f"config.json has model_type={data.get('model_type')!r}; expected {_RELEASED_MODEL_TYPE!r}"
            )
        if "recot" in data:
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data["recot"].items() if k in known})
        rope_theta = data.get("rope_theta", (data.get("rope_parameters") or {}).get("rope_theta", 1_000_000.0))
        return cls(
            hidden_size=data["hidden_size"],
            intermediate_size=data["intermediate_size"],
            num_hidden_layers=data["num_hidden_layers"],
            num_attention_heads=data["num_attention_heads"],
            num_key_value_heads=data.get("num_key_value_heads", data["num_attention_heads"]),
            vocab_size=data["vocab_size"],
            max_position_embeddings=data.get("max_position_embeddings", 32768),
            rope_theta=float(rope_theta),
            rms_norm_eps=data.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=data.get("tie_word_embeddings", True),
            vision_hidden_size=data.get("mm_hidden_size", 1152),
            projector_type=data.get("mm_projector_type", "mlp2x_gelu"),
            pool_stride=data.get("mm_spatial_pool_stride", 2),
            official_compat=True,
            extra={"source": "released config.json"},
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> VideoXLProConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read model config {path}: {exc}") from exc
        return cls.from_json_dict(data)


_TINY_VISION = dict(
    vision_hidden_size=64,
    vision_intermediate_size=128,
    vision_num_heads=4,
    vision_num_layers=2,
    image_size=98,  # 7x7 patches of 14 px
    patch_size=14,
    grid_size=6,  # 7x7 -> 6x6, pooled to 3x3 = 9 tokens per group
    compressor_norm_groups=32,
    vision_batch_size=8,
    compressor_batch_size=4,
)
_TINY_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    selector_num_heads=4,
    max_position_embeddings=32768,
    selector_multiple=1,
)

# The frozen ImageNet EfficientNet-Lite0 trunk of the CPU presets. The mean/std turn x / 255 into
# (x - 127) / 128, the input scaling these TF-Lite weights were trained with.
_LITE0_TOWER = dict(
    vision_tower="efficientnet-lite0",
    vision_num_heads=1,
    image_mean=(127 / 255, 127 / 255, 127 / 255),
    image_std=(128 / 255, 128 / 255, 128 / 255),
)

#: Named presets. ``videoxl-pro-3b`` is the released model; the others are small
#: enough for tests and CPU work (their vocabulary and token ids come from the
#: tokenizer they are paired with, see ``recot.model.tokenizer``).
PRESETS: dict[str, dict[str, Any]] = {
    "videoxl-pro-3b": {},
    "tiny": {**_TINY_VISION, **_TINY_TEXT, "vocab_size": 512, "placeholder_token_id": 259},
    # CPU preset: the frozen ImageNet EfficientNet-Lite0 stem + 11 MBConv blocks (128 px -> 8x8 x 112 at
    # stride 16), then 16 tokens per group into a small Qwen2 (hidden 256, 4 layers) with the byte tokenizer.
    "lite": {
        **_LITE0_TOWER,
        "vision_num_layers": 11,
        "vision_hidden_size": 112,
        "vision_intermediate_size": 672,  # the widest expanded width of the kept blocks (memory estimates)
        "image_size": 128,
        "patch_size": 16,
        "grid_size": 8,  # pooled to 4x4 = 16 tokens per group
        "compressor_norm_groups": 16,  # 112 = 16 x 7
        "vision_batch_size": 64,
        "compressor_batch_size": 16,
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "selector_num_heads": 4,
        # 8,192 frames make ~60 k LLM positions (2,048 groups x (13 time-text + 16 visual tokens)).
        "max_position_embeddings": 131072,
        "vocab_size": 512,
        "placeholder_token_id": 259,
    },
    # The default model's preset (a CPU model trained on ``recot make-qa-data`` videos, see
    # ``configs/default/``): Lite0's stem + 4 MBConv blocks at 48 px -> 6x6 x 40 at stride 8 (2-4 ms a frame on
    # 2 CPU cores: an hour at 1 fps encodes in seconds), pooled 3x3 to 2x2 = 4 tokens per group, each group's
    # time as a clock ("12:34", 5 tokens), a Qwen2 of hidden 128 x 4 layers: small enough to train from scratch
    # on 2 shared CPU cores in about an hour. No released quirks (trained from scratch).
    "lite48": {
        **_LITE0_TOWER,
        "vision_num_layers": 4,
        "vision_colour_bins": 16,  # + each cell's hue histogram: the trunk alone keeps little colour at 48 px
        "vision_hidden_size": 56,
        "vision_intermediate_size": 144,  # the widest expanded width of the kept blocks (memory estimates)
        "image_size": 48,
        "patch_size": 8,
        "grid_size": 6,
        "pool_stride": 3,  # 6x6 -> 2x2 = 4 tokens per group
        "compressor_norm_groups": 8,  # 56 = 8 x 7
        "compressor_residual": True,  # the objects' colour and shape reach the tokens (README, default model)
        "vision_batch_size": 256,
        "compressor_batch_size": 64,
        "hidden_size": 128,
        "intermediate_size": 512,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "selector_num_heads": 4,
        "selector_multiple": 1,
        "keep_ratio": 1.0,
        # Trained on 2-5 minute videos (30-75 groups): at any length the LLM sees at most 64 visual tokens and
        # the clocks of their groups only, an input no longer than the ones it learned on (README, default model).
        "max_visual_tokens": 64,
        "drop_empty_group_times": True,
        # 8,192 frames make ~23 k time-sequence positions (2,048 groups x (<= 7 clock-text + 4 visual tokens)).
        "max_position_embeddings": 32768,
        "vocab_size": 512,
        "placeholder_token_id": 259,
        "time_format": "clock",
        "time_vector": True,  # the LLM from scratch learns the time lookup with it, not without (time_vectors.py)
        "clock_grounding": True,  # "what is on screen at mm:ss?": 40% -> 100% on held-out videos (README)
        "official_compat": False,
    },
    "small": {
        "vision_hidden_size": 128,
        "vision_intermediate_size": 256,
        "vision_num_heads": 4,
        "vision_num_layers": 2,
        "image_size": 112,  # 8x8 patches
        "patch_size": 14,
        "grid_size": 8,  # pooled to 4x4 = 16 tokens per group
        "compressor_norm_groups": 32,
        "vision_batch_size": 32,
        "compressor_batch_size": 8,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "selector_num_heads": 4,
        "vocab_size": 512,
        "placeholder_token_id": 259,
    },
}
