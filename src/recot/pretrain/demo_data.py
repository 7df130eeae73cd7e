"""A small generated data set for trying ``recot pretrain-compressor`` on a machine with no data.

``recot pretrain-compressor --config FILE --demo-data`` writes it into the
config's first data folder when that folder is missing or empty: short videos
of the generated sample scene (:mod:`recot.data.sample_video`: shapes drifting
over a changing sky, a red disc in some clips), each starting at another moment
of the scene, and still images of it at other moments and sizes. The data is a
pure function of the seed; it shows the pipeline working, it does not teach the
compressor anything useful about real video.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

from recot.data.atomic import atomic_path
from recot.data.sample_video import sample_frame

SPEED = 20.0  # scene seconds per clip second: the sample scene moves slowly, clips are short
NEEDLE_SECONDS = 4.0


def write_demo_dataset(
    folder: str | Path,
    videos: int = 8,
    images: int = 8,
    seconds: float = 16.0,
    fps: int = 8,
    size: tuple[int, int] = (160, 120),
    seed: int = 0,
) -> tuple[list[Path], list[Path]]:
    """Write ``videos`` H.264 clips (``seconds`` long at ``fps``) and ``images`` PNG stills into ``folder``.

    Each file is written atomically. Returns (video paths, image paths).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    written_videos = []
    for k in range(videos):
        offset = float(rng.uniform(0, 3600))  # a different stretch of the scene for each clip
        needle_at = float(rng.uniform(0, seconds)) if k % 2 else -1e9  # every other clip shows the red disc
        path = folder / f"clip_{k:02d}.mp4"
        with atomic_path(path, suffix=".mp4") as tmp, av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(int(seconds * fps)):
                scene_time = offset + SPEED * i / fps
                image = sample_frame(scene_time, width, height, offset + SPEED * needle_at, SPEED * NEEDLE_SECONDS)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        written_videos.append(path)
    written_images = []
    for k in range(images):
        w, h = int(rng.integers(96, 257)), int(rng.integers(96, 257))
        path = folder / f"still_{k:02d}.png"
        with atomic_path(path, suffix=".png") as tmp:
            Image.fromarray(sample_frame(float(rng.uniform(0, 3600)), w, h, -1e9, 0.0)).save(tmp)
        written_images.append(path)
    return written_videos, written_images
