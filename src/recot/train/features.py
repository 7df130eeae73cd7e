"""Cache of the frozen vision tower's output, so that later epochs and runs skip decoding and SigLIP.

Valid only while the vision tower is frozen (both stages by default). One
safetensors file per (video content, frame sampling, tower weights, dtype)
under ``<output_dir>/features`` (or ``data.feature_cache_dir``) holding the
grouped features (G, C, 4, g, g) and the group timestamps (G,), written
atomically; an unreadable file is reported and recomputed.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
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

    def path(self, media: Path) -> Path:
        return self.root / f"{self.key(media)}.safetensors"

    def get(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        """Grouped features (G, C, 4, g, g) and group timestamps (G,) of the sample's media, cached or computed."""
        assert sample.media is not None
        path = self.path(sample.media)
        if path.is_file():
            try:
                stored = load_file(str(path))
                return stored["grouped"], stored["group_timestamps"]
            except (SafetensorError, OSError, KeyError) as exc:
                warnings.warn(
                    f"vision feature cache {path} of {sample.media} is unreadable ({exc}); recomputing", stacklevel=2
                )
        frames, times = load_frames(sample, self.model.config.image_size, self.fps, self.max_frames)
        return self._store(path, frames, times)

    def _store(self, path: Path, frames: np.ndarray, times: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        grouped = vision_features(self.model, torch.from_numpy(frames)).cpu().contiguous()
        group_times = GroupPlan.for_config(len(times), self.model.config).group_timestamps(times)
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"grouped": grouped, "group_timestamps": group_times}, str(tmp))
        return grouped, group_times

    def fill(self, samples: list[Sample], workers: int, progress: bool = True) -> int:
        """Compute the features of every sample's media that has none cached yet, before training starts.

        ``workers`` processes decode the videos (the slow part for small frames: about 0.5 s for 200 frames of
        64 px, against milliseconds for a small tower on a GPU) while this process runs the tower on each in
        turn; the same files as :meth:`get` would write one by one. Returns how many videos were computed.
        """
        from tqdm.auto import tqdm

        todo: dict[Path, Sample] = {}  # cache file -> a sample of its media
        for media, sample in {s.media: s for s in reversed(samples) if s.media is not None}.items():
            path = self.path(media)
            if not path.is_file():
                todo.setdefault(path, sample)
        if not todo:
            return 0
        size = self.model.config.image_size
        jobs = [(sample, size, self.fps, self.max_frames) for sample in todo.values()]
        # spawn: the workers only decode, and a forked CUDA process is not safe.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            decoded = pool.map(_decode, jobs)
            for path, (frames, times) in tqdm(
                zip(todo, decoded, strict=True), total=len(todo), desc="vision features", disable=not progress
            ):
                self._store(path, frames, times)
        return len(todo)


def _decode(job: tuple[Sample, int, float, int | None]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_frames` in a worker process of :meth:`VisionFeatureCache.fill`."""
    return load_frames(*job)
