"""The generated sample video: length, timing and the needle where it is promised."""

import numpy as np

from recot.data.sample_video import NEEDLE_COLOR, write_sample_video
from recot.video import probe, read_frames


def _is_red(rgb: np.ndarray) -> bool:
    return bool(np.all(np.abs(rgb.astype(int) - NEEDLE_COLOR.astype(int)) < 40))


def test_sample_video_has_needle_only_at_its_time(tmp_path):
    path = write_sample_video(tmp_path / "s.mp4", duration=120, fps=2, size=(64, 48), needle_at=60, needle_seconds=10, progress=False)
    info = probe(path)
    assert info.num_frames == 240 and info.avg_fps == 2.0 and (info.width, info.height) == (64, 48)
    batch = read_frames(path, num_frames=240)
    centre = batch.frames[:, 24, 32]
    red = [i for i in range(240) if _is_red(centre[i])]
    assert red == list(range(120, 140))  # seconds 60-70 at 2 fps
    np.testing.assert_allclose(batch.timestamps[120], 60.0)
    assert not list(tmp_path.glob(".s.mp4.*"))  # no temp file left behind
