"""Data for ReCoT pre-training: media lists, frozen vision towers, an on-disk feature cache, clip sampling.

The vision tower is frozen, so its features are computed once per file and
cached (``<cache_dir>/<key>.pt``, float16, key = hash of file identity, tower
and frame sampling). Training then only reads features: a video becomes
(F, C, H, W) features of frames sampled at ``fps``; an image becomes (1, C, H, W).

Sampling is a pure function of (seed, step, position in the global batch),
so resuming needs only the step, and N processes that each take their slice
of the global batch see exactly what one process would.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recot.data.atomic import atomic_path
from recot.video import IMAGE_EXTENSIONS, read_frames

VIDEO_EXTS = {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v"}


def list_media(paths: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """Expand files, folders (recursively) and ``.txt`` list files into sorted (videos, images)."""
    videos: set[Path] = set()
    images: set[Path] = set()

    def add(p: Path) -> None:
        ext = p.suffix.lower()
        if ext in VIDEO_EXTS:
            videos.add(p.resolve())
        elif ext in IMAGE_EXTENSIONS:
            images.add(p.resolve())

    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            for child in p.rglob("*"):
                if child.is_file():
                    add(child)
        elif p.suffix.lower() == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line) if Path(line).is_absolute() else p.parent / line
                    add(q)
        elif p.is_file():
            add(p)
        else:
            raise FileNotFoundError(f"data path not found: {p}")
    return sorted(videos), sorted(images)


def read_media_frames(path: str | Path, fps: float, size: int, max_frames: int | None = None) -> np.ndarray:
    """uint8 (F, size, size, 3) frames: a video sampled at ``fps`` (its first ``max_frames``
    samples, so clips keep the ``1/fps`` spacing), or an image as one frame."""
    end = None if max_frames is None else max_frames / fps
    return read_frames(path, fps=fps, end=end, size=size).frames[:max_frames]


class FrozenTower:
    """A frozen vision backbone: uint8 frames (N, H, W, 3) -> features (N, C, h, w).

    ``name``: ``"efficientnet-lite0"`` (ImageNet weights of the optional extra;
    ``layer`` "blocks" = 320 channels or "head" = 1280, 7x7 at 224 px) or
    ``"siglip"`` (the vision tower of a ``VideoXLProConfig`` preset: SigLIP with
    weights from ``seed`` (random init; no SigLIP weights ship in a registry)
    or from a state-dict file ``weights``; for a preset whose tower is
    EfficientNet-Lite0, e.g. ``lite48``, the trunk with its ImageNet weights),
    features resized to the preset's grid, at the preset's image size.
    """

    def __init__(
        self,
        name: str = "efficientnet-lite0",
        layer: str = "blocks",
        preset: str = "tiny",
        seed: int = 0,
        weights: str | None = None,
        batch_size: int = 16,
    ) -> None:
        self.name = name
        self.batch_size = batch_size
        self.spec = {"name": name, "layer": layer, "preset": preset, "seed": seed, "weights": weights}
        if name == "efficientnet-lite0":
            from recot.model.efficientnet import IMAGE_SIZE, EfficientNetTower

            self.module = EfficientNetTower(layer)
            self.image_size = IMAGE_SIZE
            self.channels = self.module.channels
            self._fn: Callable[[np.ndarray], torch.Tensor] = self.module
        elif name == "siglip":
            from recot.config import VideoXLProConfig
            from recot.model.frames import normalize_frames
            from recot.model.vision import VisionTower, build_vision_tower, resize_to_grid

            cfg = VideoXLProConfig.from_preset(preset)
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                tower = VisionTower(cfg) if cfg.vision_tower == "siglip" else build_vision_tower(cfg)
            if cfg.vision_tower == "efficientnet-lite0" and not weights:
                # A preset with the EfficientNet trunk (e.g. ``lite48``): its real ImageNet weights, so that the
                # compressor pre-trains on exactly the features the preset's model will feed it.
                tower.load_imagenet_weights()
            if weights:
                tower.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            tower.eval().requires_grad_(False)
            if cfg.vision_colour_bins:  # the preset's features changed with the field: a new cache key
                self.spec["colour_bins"] = cfg.vision_colour_bins
            self.module = tower
            self.image_size = cfg.image_size
            self.channels = cfg.vision_hidden_size
            @torch.no_grad()
            def run(frames: np.ndarray) -> torch.Tensor:
                pixels = normalize_frames(np.ascontiguousarray(frames), cfg.image_mean, cfg.image_std)
                return resize_to_grid(tower(pixels), cfg.grid_size)

            self._fn = run
        else:
            raise ValueError(f"unknown backbone {name!r}; use 'efficientnet-lite0' or 'siglip'")

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """float32 features (N, C, h, w) of uint8 frames (N, H, W, 3), in batches of ``batch_size``."""
        parts = [self._fn(frames[i : i + self.batch_size]) for i in range(0, len(frames), self.batch_size)]
        return torch.cat(parts).float()


def _cache_key(path: Path, tower_spec: dict, fps: float, max_frames: int | None) -> str:
    st = path.stat()
    ident = {"path": str(path), "size": st.st_size, "mtime": st.st_mtime_ns, "tower": tower_spec}
    ident.update(fps=fps, max_frames=max_frames)
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def atomic_save(obj: object, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it into place (no torn files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def extract_features(
    tower: FrozenTower,
    path: Path,
    is_video: bool,
    fps: float,
    max_frames: int | None,
    cache_dir: Path | None,
) -> torch.Tensor:
    """Features (F, C, h, w) float16 of one file, read from / written to the cache.

    An unreadable cache file is reported (naming it and the media file) and recomputed.
    """
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{_cache_key(path, tower.spec, fps if is_video else 0.0, max_frames)}.pt"
        if cache_file.exists():
            try:
                return torch.load(cache_file, weights_only=True)
            except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
                warnings.warn(f"feature cache {cache_file} of {path} is unreadable ({exc}); recomputing", stacklevel=2)
    frames = read_media_frames(path, fps, tower.image_size, max_frames)
    feats = tower(frames).half()
    if cache_file is not None:
        atomic_save(feats, cache_file)
    return feats


@dataclass
class FeatureStore:
    """Cached features of a data set: ``videos`` [(F, C, H, W)] with F >= frames, ``images`` [(1, C, H, W)].

    ``clips`` indexes every non-overlapping run of ``frames`` consecutive video
    frames as (video, start).
    """

    videos: list[torch.Tensor]
    images: list[torch.Tensor]
    frames: int = 4

    def __post_init__(self) -> None:
        self.videos = [v for v in self.videos if v.shape[0] >= self.frames]
        self.clips = [(i, s) for i, v in enumerate(self.videos) for s in range(0, v.shape[0] - self.frames + 1, self.frames)]
        if not self.clips and not self.images:
            raise ValueError(f"no usable data: need videos with >= {self.frames} sampled frames, or images")

    @property
    def channels(self) -> int:
        """Feature channels."""
        return (self.videos or self.images)[0].shape[1]

    def clip(self, index: int) -> torch.Tensor:
        """Video clip ``index`` as float (C, T, H, W)."""
        v, s = self.clips[index]
        return self.videos[v][s : s + self.frames].float().permute(1, 0, 2, 3)

    def image(self, index: int) -> torch.Tensor:
        """Image ``index`` as float (C, H, W)."""
        return self.images[index][0].float()


def build_feature_store(
    tower: FrozenTower,
    paths: list[str | Path],
    fps: float,
    max_frames: int | None,
    cache_dir: Path | None,
    frames: int = 4,
    progress: bool = False,
) -> FeatureStore:
    """Extract (or load cached) features of every video and image under ``paths``."""
    from tqdm.auto import tqdm

    videos, images = list_media(paths)
    items = [(p, True) for p in videos] + [(p, False) for p in images]
    feats = [
        extract_features(tower, p, is_video, fps, max_frames, cache_dir)
        for p, is_video in tqdm(items, desc="features", disable=not progress)
    ]
    return FeatureStore(feats[: len(videos)], feats[len(videos) :], frames)


@dataclass(frozen=True)
class SampleRef:
    """One training sample: a video clip (``is_image`` False) or an image, and its mask seed."""

    is_image: bool
    index: int
    seed: int


def global_batch_refs(store: FeatureStore, seed: int, step: int, batch_size: int, image_ratio: float) -> list[SampleRef]:
    """The global batch of ``step``: a deterministic function of (seed, step).

    Each sample is an image with probability ``image_ratio`` (when both kinds
    exist), drawn uniformly from its pool.
    """
    rng = np.random.default_rng([seed, step])
    refs = []
    for _ in range(batch_size):
        use_image = bool(store.images) and (not store.clips or rng.random() < image_ratio)
        pool = len(store.images) if use_image else len(store.clips)
        refs.append(SampleRef(use_image, int(rng.integers(pool)), int(rng.integers(2**62))))
    return refs
