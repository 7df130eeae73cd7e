"""Cache of the frozen vision tower's output, so that later epochs and runs skip decoding and SigLIP.

Valid only while the vision tower is frozen (both stages by default). One
safetensors file per (video content, frame sampling, tower weights, dtype)
under ``<output_dir>/features`` (or ``data.feature_cache_dir``) holding the
grouped features (G, C, 4, g, g) and the group timestamps (G,), written
atomically; an unreadable file is reported and recomputed.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recot.data.atomic import atomic_path
from recot.engine.cache import content_digest, tensor_digest
from recot.model.groups import GroupPlan
from recot.model.videoxl_pro import VideoXLPro
from recot.train.data import Sample, load_frames
from recot.train.forward import vision_features


class VisionFeatureCache:
    """Grouped vision features of samples' media, computed once per video."""

    def __init__(self, root: str | Path, model: VideoXLPro, fps: float, max_frames: int | None) -> None:
        self.root = Path(root)
        self.model = model
        self.fps, self.max_frames = fps, max_frames
        tower = tensor_digest(dict(model.vision_tower.state_dict()))
        config = model.config
        self.identity = (
            f"{tower}|{model.dtype}|{config.image_size}|{config.grid_size}|{config.official_compat}|{fps}|{max_frames}"
            + (f"|colour{config.vision_colour_bins}" if config.vision_colour_bins else "")
        )

    def key(self, media: Path) -> str:
        (self.root / "digests").mkdir(parents=True, exist_ok=True)
        digest = content_digest(media, memo_dir=self.root / "digests")
        return hashlib.sha256(f"{digest}|{self.identity}".encode()).hexdigest()[:40]

    def get(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        """Grouped features (G, C, 4, g, g) and group timestamps (G,) of the sample's media, cached or computed."""
        assert sample.media is not None
        path = self.root / f"{self.key(sample.media)}.safetensors"
        if path.is_file():
            try:
                stored = load_file(str(path))
                return stored["grouped"], stored["group_timestamps"]
            except (SafetensorError, OSError, KeyError) as exc:
                warnings.warn(
                    f"vision feature cache {path} of {sample.media} is unreadable ({exc}); recomputing", stacklevel=2
                )
        frames, times = load_frames(sample, self.model.config.image_size, self.fps, self.max_frames)
        grouped = vision_features(self.model, torch.from_numpy(frames)).cpu().contiguous()
        group_times = GroupPlan.for_config(len(times), self.model.config).group_timestamps(times)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"grouped": grouped, "group_timestamps": group_times}, str(tmp))
        return grouped, group_times
