"""The video ``recot demo`` asks about: one hour of the synthetic QA generator, drawn from a fixed test seed.

The default model is trained on ``recot make-qa-data`` videos, so the demo uses
one of them (a seed of the ``test`` split that the default model's recipe never
trains or evaluates on: its test sets take the split's first videos) and asks
questions from the templates it learned (``docs/synthetic-qa.md``), whose
answers are known exactly (:func:`demo_questions`).
"""

from __future__ import annotations

from pathlib import Path

from recot.data.synthetic_qa import Question, VideoSpec, make_questions, make_video_spec, split_seeds, write_video

#: Index of the demo video inside the ``test`` split's seed range (the last one: far from the first videos that
#: the recipe's test sets use).
DEMO_INDEX = 99_999
DEMO_MINUTES = 60.0
#: Frame side: the default model sees 48 px; 64 px keeps the file small (~0.5 MB) and still watchable.
DEMO_SIZE = 64
DEMO_FILE = "demo-1h-64px-1fps.mp4"


def demo_spec() -> VideoSpec:
    """The demo video's scenes and events (one hour at 1 fps, 64x64)."""
    seed = split_seeds("test", 1, DEMO_INDEX)[0]
    return make_video_spec(seed, DEMO_MINUTES, DEMO_MINUTES, 1.0, DEMO_SIZE)


def demo_questions() -> dict[str, Question]:
    """The demo video's questions by type (``when``, ``attribute``, ``count``, ``order``, ``scene``)."""
    return {q.qa_type: q for q in make_questions(demo_spec())}


def write_demo_video(path: str | Path, progress: bool = True) -> Path:
    """Render and encode the demo video to ``path`` (atomically; ~10 s on 2 CPU cores)."""
    from tqdm import tqdm

    spec = demo_spec()
    with tqdm(total=spec.num_frames, desc="demo video", unit="frame", disable=not progress) as bar:
        return write_video(spec, path, on_frames=bar.update)
