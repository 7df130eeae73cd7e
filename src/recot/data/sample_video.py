"""A generated long sample video that ships with recot as code, not as a file.

Benchmarks and the V-NIAH haystack need a long video on a machine with no network
(``recot demo`` uses a video of the synthetic QA generator instead). This one is
drawn frame by frame: coloured shapes drift over a slowly changing background,
and one "needle" (a large red disc) is on screen for a few seconds at a known
time, so a question about it has a known answer. An hour at 1 fps and 160x120
encodes in seconds and takes well under a megabyte.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from recot.data.atomic import atomic_path

SHAPE_COLORS = np.array([[40, 90, 220], [30, 170, 60], [230, 200, 40], [150, 60, 190]], dtype=np.uint8)
NEEDLE_COLOR = np.array([220, 30, 30], dtype=np.uint8)


def sample_frame(t: float, width: int, height: int, needle_at: float, needle_seconds: float) -> np.ndarray:
    """The RGB frame (height, width, 3) at time ``t`` seconds."""
    yy, xx = np.mgrid[0:height, 0:width]
    shade = 0.5 + 0.5 * np.sin(2 * np.pi * t / 600.0)  # a 10-minute day/night cycle
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[...] = (np.array([70, 80, 90]) + shade * np.array([90, 90, 70])).astype(np.uint8)
    frame[yy > height * 3 // 4] = (60, 110, 50)  # ground
    for k, color in enumerate(SHAPE_COLORS):
        cx = (width * (0.5 + 0.4 * np.sin(t / (37.0 + 11 * k) + k))) % width
        cy = height * (0.4 + 0.25 * np.cos(t / (53.0 + 7 * k) + 2 * k))
        r = max(3, min(width, height) // 12)
        inside = (np.abs(xx - cx) < r) & (np.abs(yy - cy) < r) if k % 2 else (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        frame[inside] = color
    if needle_at <= t < needle_at + needle_seconds:
        r = min(width, height) // 4
        frame[(xx - width / 2) ** 2 + (yy - height / 2) ** 2 < r * r] = NEEDLE_COLOR
    return frame


def write_sample_video(
    path: str | Path,
    duration: float = 3600.0,
    fps: int = 1,
    size: tuple[int, int] = (160, 120),
    needle_at: float | None = None,
    needle_seconds: float = 20.0,
    progress: bool = True,
) -> Path:
    """Write the sample video (H.264 MP4) to ``path`` atomically and return the path.

    ``needle_at`` defaults to 62% of the way through the video.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    needle_at = 0.62 * duration if needle_at is None else needle_at
    total = int(duration * fps)
    with atomic_path(path, suffix=".mp4") as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(10 * fps)}
        for i in tqdm(range(total), desc="sample video", unit="frame", disable=not progress):
            image = sample_frame(i / fps, width, height, needle_at, needle_seconds)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path
