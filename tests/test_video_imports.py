"""Import hygiene of recot.video: probing loads no torch, no import cycles, one image-suffix list."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def fresh_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter that imports this checkout's recot."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("module", ["recot", "recot.video", "recot.video.probe", "recot.video.commands"])
def test_probing_imports_no_torch(module):
    # `recot video info` only probes; importing torch cost it 6-13 s and 380 MB.
    result = fresh_python(f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_probe_runs_without_torch(videos):
    code = f"import sys; from recot.video import probe; print(probe({str(videos['h264_mp4'])!r}).num_frames, 'torch' in sys.modules)"
    result = fresh_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["90", "False"]


def test_lazy_names_still_import():
    import recot
    import recot.video
    from recot import FrameSampling, VideoChat, VideoXLPro, VideoXLProConfig, __version__  # noqa: F401
    from recot.video import FrameBatch, iter_frames, read_frames  # noqa: F401

    assert (VideoChat.__module__, read_frames.__module__) == ("recot.engine.chat", "recot.video.decode")
    assert all(hasattr(recot, name) for name in recot.__all__) and all(hasattr(recot.video, n) for n in recot.video.__all__)
    assert set(recot.__all__) <= set(dir(recot)) and set(recot.video.__all__) <= set(dir(recot.video))
    with pytest.raises(AttributeError, match="module 'recot.video' has no attribute 'nope'"):
        recot.video.nope  # noqa: B018


def test_backends_do_not_import_the_decoder():
    # backends.py once imported decode.py (for its time budget) while decode.py imports backends.py: a cycle.
    result = fresh_python("import sys, recot.video.backends; print('recot.video.decode' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_pretraining_lists_every_image_suffix_the_video_layer_reads(tmp_path):
    from recot.pretrain.data import list_media
    from recot.video import IMAGE_EXTENSIONS

    assert {".gif", ".tif", ".tiff", ".jpg", ".png", ".webp", ".bmp"} <= IMAGE_EXTENSIONS
    for suffix in sorted(IMAGE_EXTENSIONS):
        (tmp_path / f"image{suffix.upper() if suffix == '.gif' else suffix}").write_bytes(b"")
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "notes.txt.bak").write_bytes(b"")
    videos, images = list_media([tmp_path])
    assert [p.name for p in videos] == ["clip.mp4"]
    assert sorted(p.suffix.lower() for p in images) == sorted(IMAGE_EXTENSIONS)
