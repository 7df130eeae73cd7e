"""Model specifications: what ``--model`` and ``VideoChat.from_pretrained`` accept, and the default model.

A specification is one of

* ``"default"`` (or None): the default model, the trained checkpoint in the
  package at ``recot/weights/default`` (what ``scripts/train_default.sh`` and
  ``scripts/export_default.py`` produce; it answers "what is on screen at mm:ss?" (scene or object),
  see ``benchmarks/results/default_model.md``). A copy of the package without it
  falls back to the untrained ``small`` preset with weights drawn from a fixed seed;
* an untrained preset name (``small``, ``tiny``, ``lite``, ``lite48``): that preset, weights
  drawn from the same fixed seed (``lite``'s EfficientNet-Lite0 tower gets its
  real ImageNet weights, from the optional extra ``recot[efficientnet]``);
* a checkpoint directory (``config.json`` + safetensors weights + tokenizer).

An existing directory wins over a preset of the same name. An untrained preset
is written once into ``<cache dir>/models/untrained-<preset>-seed<seed>`` as an
ordinary checkpoint (``save_pretrained``, with the offline byte tokenizer) and
loaded from there afterwards, so every run gives the same (meaningless) answers
and the encode-cache keys stay stable. The ``videoxl-pro-3b`` preset has sizes
but no weights: it serves ``recot plan`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from recot.config import PRESETS, VideoXLProConfig
from recot.data.atomic import build_once
from recot.engine.cache import resolve_cache_dir
from recot.model.tokenizer import build_byte_tokenizer
from recot.model.videoxl_pro import VideoXLPro

DEFAULT_MODEL = "default"
#: The preset "default" falls back to when the shipped weights are missing.
DEFAULT_PRESET = "small"
DEFAULT_SEED = 0
#: Presets recot can build with random weights and the byte tokenizer (the others have a real vocabulary).
UNTRAINED_PRESETS = ("small", "tiny", "lite", "lite48")


def shipped_default_dir() -> Path | None:
    """The trained default model inside the package (``recot/weights/default``), or None when absent."""
    directory = Path(str(resources.files("recot") / "weights" / "default"))
    return directory if (directory / "config.json").is_file() else None


class ModelSpecError(ValueError):
    """A model specification that names neither a checkpoint directory nor a preset."""


@dataclass(frozen=True)
class ModelSource:
    """What a model specification resolved to: a checkpoint directory or a preset (see :func:`resolve_model`)."""

    spec: str
    directory: Path | None = None
    preset: str | None = None

    @property
    def untrained(self) -> bool:
        """True for a preset: random weights, meaningless answers."""
        return self.preset is not None

    def describe(self) -> str:
        """The checkpoint directory, or e.g. "the built-in UNTRAINED 'small' model (random weights, seed 0)"."""
        if self.preset is None:
            return str(self.directory)
        return f"the built-in UNTRAINED '{self.preset}' model (random weights, seed {DEFAULT_SEED})"

    def config(self) -> VideoXLProConfig:
        """The model's :class:`recot.VideoXLProConfig` (sizes only: no weights are read or built)."""
        if self.preset is not None:
            return VideoXLProConfig.from_preset(self.preset)
        return _read_config(self.directory)

    def checkpoint_dir(self, cache_dir: str | Path | None = None) -> Path:
        """The checkpoint directory; an untrained preset is built on first use under ``cache_dir``'s ``models/``.

        Safe across processes. Raises :class:`ModelSpecError` for a preset without weights.
        """
        if self.directory is not None:
            return self.directory
        if self.preset not in UNTRAINED_PRESETS:
            raise ModelSpecError(
                f"preset {self.preset!r} has sizes but no weights (only {', '.join(UNTRAINED_PRESETS)} can be built "
                "untrained); pass the checkpoint directory of a trained model"
            )
        return untrained_model_dir(self.preset, cache_dir)


def resolve_model(spec: str | Path | None) -> ModelSource:
    """Resolve a model specification (see the module docstring) without loading any weights.

    A checkpoint directory's ``config.json`` is read here, so that a missing or
    broken one is reported before any work starts. Raises :class:`ModelSpecError`
    (a ``ValueError``) saying what is wrong: a file instead of a directory, a
    directory that does not exist or has no readable ``config.json``, an unknown
    preset name.
    """
    text = DEFAULT_MODEL if spec is None else str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        _read_config(path)
        return ModelSource(text, directory=path)
    if path.exists():
        raise ModelSpecError(
            f"{text} is a file, not a model: give the checkpoint directory that holds config.json and the "
            "safetensors weights"
        )
    if text == DEFAULT_MODEL:
        shipped = shipped_default_dir()
        return ModelSource(text, directory=shipped) if shipped is not None else ModelSource(text, preset=DEFAULT_PRESET)
    if text in PRESETS:
        return ModelSource(text, preset=text)
    if len(path.parts) > 1 or text.startswith((".", "~")):
        raise ModelSpecError(f"model directory {text} does not exist")
    raise ModelSpecError(
        f"{text!r} is neither a checkpoint directory nor a model name; names: {DEFAULT_MODEL}, "
        f"{', '.join(sorted(PRESETS))}"
    )


def _read_config(directory: Path) -> VideoXLProConfig:
    config_path = directory / "config.json"
    if not config_path.is_file():
        found = sorted(p.name for p in directory.iterdir())[:8]
        raise ModelSpecError(
            f"{directory} is not a checkpoint directory: it has no config.json (found: {', '.join(found) or 'nothing'})"
        )
    try:
        return VideoXLProConfig.load(config_path)  # its errors name the file
    except TypeError as exc:  # unknown or mistyped fields
        raise ModelSpecError(f"{config_path}: {exc}") from exc


def untrained_model_dir(preset: str = DEFAULT_PRESET, cache_dir: str | Path | None = None) -> Path:
    """The checkpoint directory of an untrained preset (weights from ``DEFAULT_SEED``), built on first use."""
    target = resolve_cache_dir(cache_dir) / "models" / f"untrained-{preset}-seed{DEFAULT_SEED}"
    # save_pretrained renames a finished directory into place, so its existence means complete.
    return build_once(target, lambda: build_untrained_model(preset).save_pretrained(target, tokenizer=build_byte_tokenizer()))


def default_model_dir(cache_dir: str | Path | None = None) -> Path:
    """The default model's checkpoint directory: a trained model in the package when one is there, else the
    untrained ``small`` preset built on first use in ``<cache dir>/models/untrained-small-seed0``.

    The same as ``resolve_model("default").checkpoint_dir(cache_dir)``.
    """
    return resolve_model(DEFAULT_MODEL).checkpoint_dir(cache_dir)


def build_untrained_model(preset: str = DEFAULT_PRESET) -> VideoXLPro:
    """An untrained preset in memory, initialised from ``DEFAULT_SEED`` (the caller's random state is left alone)."""
    config = VideoXLProConfig.from_preset(preset, extra={"untrained": True, "seed": DEFAULT_SEED})
    return VideoXLPro.from_config(config, DEFAULT_SEED).eval()
