"""Reading and writing checkpoints in the released Video-XL-Pro layout.

A checkpoint directory holds ``config.json`` (``model_type`` ``llava_qwen``),
``model.safetensors`` or shards listed in ``model.safetensors.index.json``, and
tokenizer files. Tensors carry the released key names; :data:`KEY_PREFIXES`
maps them onto this package's module names. Loading is strict: missing,
unexpected and mis-shaped tensors are reported by name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import init_empty_weights
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from recot.config import VideoXLProConfig

# Functions here take the model class or instance as an argument (``VideoXLPro``
# calls them), so this module never imports the model module: no import cycle.
ModelT = TypeVar("ModelT", bound=nn.Module)

#: (our module prefix, released checkpoint prefix).
KEY_PREFIXES: list[tuple[str, str]] = [
    ("vision_tower.siglip.", "model.vision_tower.vision_tower.vision_model."),
    # Not in any released checkpoint: the lite preset's frozen EfficientNet-Lite0 trunk (its own names kept).
    ("vision_tower.efficientnet.", "model.vision_tower.efficientnet."),
    ("compressor.", "model.sae."),
    ("projector.", "model.mm_projector."),
    ("selector.text_mlp.", "model.text_mlp."),
    ("selector.window_attention.", "model.WindowTimeToTokenAttention."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
]
TIED_KEY = "lm_head.weight"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded as this model."""


def to_released_key(key: str) -> str:
    """Our state-dict key -> the released checkpoint's key."""
    for ours, released in KEY_PREFIXES:
        if key.startswith(ours):
            return released + key[len(ours) :]
    raise KeyError(f"no released name for parameter {key!r}")


def from_released_key(key: str) -> str | None:
    """The released checkpoint's key -> ours (None when no module takes it)."""
    for ours, released in sorted(KEY_PREFIXES, key=lambda pair: -len(pair[1])):
        if key.startswith(released):
            return ours + key[len(released) :]
    return None


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``torch.bfloat16`` or a name such as ``"bf16"``, ``"float16"``; None is float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
        "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
        "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    }  # fmt: skip
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(names)}")
    return names[dtype]


class _TensorFiles:
    """The tensors of a checkpoint directory, across shards, read lazily."""

    def __init__(self, directory: Path) -> None:
        index = directory / INDEX_FILE
        if index.is_file():
            try:
                weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError) as exc:
                raise CheckpointError(f"{index} is not a safetensors index: {exc}") from exc
            files = sorted(set(weight_map.values()))
        elif (directory / SINGLE_FILE).is_file():
            files = [SINGLE_FILE]
        else:
            found = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
            raise CheckpointError(
                f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE} (found: {', '.join(found) or 'nothing'}); "
                "only safetensors checkpoints are supported"
            )
        self.handles: dict[str, Any] = {}
        self.location: dict[str, str] = {}
        for name in files:
            path = directory / name
            try:
                handle = safe_open(str(path), framework="pt")
            except (SafetensorError, OSError, ValueError) as exc:
                raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc
            self.handles[name] = handle
            for key in handle.keys():
                self.location[key] = name

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.handles[self.location[key]].get_slice(key).get_shape())

    def tensor(self, key: str) -> torch.Tensor:
        try:
            return self.handles[self.location[key]].get_tensor(key)
        except SafetensorError as exc:
            raise CheckpointError(f"cannot read tensor {key!r} from {self.location[key]}: {exc}") from exc


def infer_sizes_from_tensors(files: _TensorFiles, config: VideoXLProConfig) -> dict[str, Any]:
    """Sizes a released ``config.json`` does not carry, read off the tensors."""
    vision = "model.vision_tower.vision_tower.vision_model."
    sizes: dict[str, Any] = {}
    layers = {int(k[len(vision) :].split(".")[2]) for k in files.location if k.startswith(vision + "encoder.layers.")}
    if layers:
        sizes["vision_num_layers"] = max(layers) + 1
    if vision + "embeddings.patch_embedding.weight" in files.location:
        width, _, patch, _ = files.shape(vision + "embeddings.patch_embedding.weight")
        num_positions = files.shape(vision + "embeddings.position_embedding.weight")[0]
        side = int(round(num_positions**0.5))
        sizes.update(vision_hidden_size=width, patch_size=patch)
        if config.image_size // patch != side:  # SigLIP floors: 384 px / 14 px = 27 patches
            sizes["image_size"] = side * patch
    if vision + "encoder.layers.0.mlp.fc1.weight" in files.location:
        sizes["vision_intermediate_size"] = files.shape(vision + "encoder.layers.0.mlp.fc1.weight")[0]
    if "model.sae.temporal_encoding" in files.location:
        sizes["frames_per_group"] = files.shape("model.sae.temporal_encoding")[0]
    blocks = {int(k.split(".")[3]) for k in files.location if k.startswith("model.sae.encoder.")}
    if blocks:
        sizes["compressor_stages"] = (max(blocks) + 1) // 3
    table = "model.sae.encoder.1.relative_position_k.embeddings_table"
    if table in files.location:
        sizes["compressor_max_relative_position"] = (files.shape(table)[0] - 1) // 2
    return sizes


def _check_keys(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], optional: set[str], what: str
) -> None:
    """Raise :class:`CheckpointError` (``what``, then every missing, unexpected and
    mis-shaped key by name) unless ``found`` fits ``expected``; keys in ``optional`` may be absent."""
    missing = sorted(set(expected) - set(found) - optional)
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {found[k]} vs model {expected[k]}" for k in set(found) & set(expected) if found[k] != expected[k]
    )
    problems = [
        f"  {title} ({len(keys)}): " + ", ".join(keys)
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched))
        if keys
    ]
    if problems:
        raise CheckpointError("\n".join([what + ":", *problems]))


def load_pretrained(
    cls: type[ModelT],
    path: str | Path,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    attn_implementation: str = "sdpa",
) -> ModelT:
    """Build the model from ``path/config.json`` and load its tensors strictly.

    Raises :class:`CheckpointError` naming every missing, unexpected or
    mis-shaped tensor, or the file that cannot be read.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json")
    try:
        config = VideoXLProConfig.load(config_path)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: {exc}") from exc
    files = _TensorFiles(directory)
    if config.extra.get("source") == "released config.json":
        config = dataclasses.replace(config, **infer_sizes_from_tensors(files, config))

    torch_dtype = parse_dtype(dtype)
    target = torch.device(device) if device is not None else torch.device("cpu")
    with init_empty_weights(include_buffers=False):
        model = cls(config, attn_implementation=attn_implementation)

    expected = {to_released_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    tied = config.tie_word_embeddings
    required = {k for k in expected if not (tied and k == TIED_KEY)}
    found = {k: files.shape(k) for k in files.location}
    _check_keys(expected, found, {TIED_KEY} if tied else set(),
                f"checkpoint {directory} does not match the model built from its config.json")  # fmt: skip

    state = {}
    for key in sorted(required):
        tensor = files.tensor(key)
        state[from_released_key(key)] = tensor.to(device=target, dtype=torch_dtype if tensor.is_floating_point() else None)
    model.load_state_dict(state, strict=False, assign=True)
    if tied:
        model.language_model.lm_head.weight = model.language_model.get_input_embeddings().weight
    model.to(target)  # buffers (rotary frequencies, position ids) keep their own dtype
    still_meta = [name for name, p in model.named_parameters() if p.is_meta]
    if still_meta:
        raise CheckpointError(f"checkpoint {directory}: parameters left unloaded: {', '.join(still_meta)}")
    return model.eval()


def save_compressor(compressor: torch.nn.Module, path: str | Path) -> None:
    """Write a compressor's weights to a safetensors file under the released keys (``model.sae.*``), atomically."""
    from recot.data.atomic import atomic_path

    state = {to_released_key("compressor." + k): v.detach().contiguous().cpu() for k, v in compressor.state_dict().items()}
    # The residual path has no weights: the file says whether the weights were trained with it.
    metadata = {
        "format": "pt",
        "residual": str(bool(getattr(compressor, "residual", False))).lower(),
        "passthrough_channels": str(int(getattr(compressor, "passthrough_channels", 0))),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def load_compressor(model: nn.Module, path: str | Path) -> None:
    """Load compressor weights (``model.sae.*``, e.g. from ReCoT pre-training) into ``model``, strictly.

    Raises :class:`CheckpointError` naming missing, unexpected or mis-shaped keys, and
    weights trained with(out) the compressor's residual path (file metadata ``residual``;
    files without it, e.g. released weights, were trained without) for a model configured
    the other way (``compressor_residual``).
    """
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            state = {key: handle.get_tensor(key) for key in handle.keys()}
            metadata = handle.metadata() or {}
            trained_residual = metadata.get("residual", "false") == "true"
            trained_passthrough = int(metadata.get("passthrough_channels", "0"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    residual = bool(getattr(model.compressor, "residual", False))
    if trained_residual != residual:
        raise CheckpointError(
            f"compressor weights {path} were trained with residual={str(trained_residual).lower()}, but the model's "
            f"compressor_residual is {residual}: pre-train with compressor.residual: {str(residual).lower()}"
        )
    passthrough = int(getattr(model.compressor, "passthrough_channels", 0))
    if trained_passthrough != passthrough:
        raise CheckpointError(
            f"compressor weights {path} were trained with passthrough_channels={trained_passthrough}, but the "
            f"model's compressor_passthrough_channels is {passthrough}: pre-train with "
            f"compressor.passthrough_channels: {passthrough}"
        )
    expected = {to_released_key("compressor." + k): v for k, v in model.compressor.state_dict().items()}
    _check_keys(
        {k: tuple(v.shape) for k, v in expected.items()},
        {k: tuple(v.shape) for k, v in state.items()},
        set(),
        f"compressor weights {path} do not fit the model",
    )
    with torch.no_grad():
        for key, value in state.items():
            expected[key].copy_(value)


def _shards(state: dict[str, torch.Tensor], max_shard_size: int | None) -> Iterator[dict[str, torch.Tensor]]:
    shard: dict[str, torch.Tensor] = {}
    size = 0
    for key in sorted(state):
        nbytes = state[key].numel() * state[key].element_size()
        if shard and max_shard_size is not None and size + nbytes > max_shard_size:
            yield shard
            shard, size = {}, 0
        shard[key] = state[key]
        size += nbytes
    yield shard


def save_pretrained(
    model: nn.Module, path: str | Path, tokenizer: Any | None = None, max_shard_size: int | None = None
) -> None:
    """Write ``path`` in the released layout, atomically (a temp dir renamed into place).

    ``max_shard_size`` (bytes) splits the weights into shards with an index.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tied = model.config.tie_word_embeddings
    state = {
        to_released_key(k): v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if not (tied and to_released_key(k) == TIED_KEY)
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model.config.save(tmp / "config.json")
        shards = list(_shards(state, max_shard_size))
        if len(shards) == 1:
            save_file(shards[0], str(tmp / SINGLE_FILE), metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
            total = sum(v.numel() * v.element_size() for v in state.values())
            (tmp / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
