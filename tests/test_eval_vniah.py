"""V-NIAH: needle files, synthetic needles, frame-exact leak-free insertion, the grid and its heatmap."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine_fixtures import write_video
from eval_fixtures import ScriptedChat, run_scripted
from recot import VideoXLProConfig
from recot.eval.api import DataError, EvalItem
from recot.eval.needle import (
    haystack_clip,
    needle_position,
    read_lossless,
    read_needle_file,
    resolve_needle_image,
    synthetic_needle_image,
    write_cell,
    write_synthetic_needles,
)
from recot.eval.tasks.vniah import VNIAH, bundled_question_file
from recot.model.processor import VideoXLProProcessor
from recot.model.tokenizer import build_byte_tokenizer
from recot.video import iter_frames, plan_frames, probe, read_frames


def test_bundled_videoxl_question_file() -> None:
    needles = read_needle_file(bundled_question_file())
    assert [n.answer for n in needles] == ["D", "C", "C", "B", "A"]
    assert needles[0].options == ["cooking", "sleeping", "fighting", "reading"]
    assert needles[2].image == "-errNPiGXF4 (online-video-cutter.com).png"
    source = (bundled_question_file().parent / "SOURCE.md").read_text()
    assert "Apache License 2.0" in source and "6e3dc89dad54f9322496dcb13494891ce558d243" in source


def test_needle_names_map_to_the_repository_files(tmp_path: Path) -> None:
    for name in ("readingsky.png", "-errNPiGXF4", "zIudsNnuaSY", "YeT4acsbqo_1s.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert resolve_needle_image(tmp_path, "readingsky.png") == tmp_path / "readingsky.png"
    assert resolve_needle_image(tmp_path, "-errNPiGXF4 (online-video-cutter.com).png") == tmp_path / "-errNPiGXF4"
    assert resolve_needle_image(tmp_path, "zIudsNnuaSY (online-video-cutter.com).png") == tmp_path / "zIudsNnuaSY"
    assert resolve_needle_image(tmp_path, "YeT4acsbqo_1s.png") == tmp_path / "YeT4acsbqo_1s.jpg"  # same stem
    assert resolve_needle_image(tmp_path, "0x6wV-RDB4A_1s.png") is None


def test_synthetic_needles(tmp_path: Path) -> None:
    folder = write_synthetic_needles(tmp_path / "needles")
    needles = read_needle_file(folder / "qa.json")
    assert [n.answer for n in needles] == ["B", "D", "A", "C", "D"]
    assert needles[0].question == (
        "Question: What shape is drawn on the white card? Response the correct choice only.\n"
        "Options:(A) circle\n(B) triangle\n(C) square\n(D) star\nChoose the best option."
    )
    assert all((folder / n.image).is_file() for n in needles)
    blue_circle = synthetic_needle_image("circle", (30, 70, 220))
    assert blue_circle[192, 192].tolist() == [30, 70, 220]  # the centre is the shape
    assert blue_circle[40, 40].tolist() == [255, 255, 255]  # the card
    assert blue_circle[5, 5].tolist() == [128, 128, 128]  # the border
    assert write_synthetic_needles(tmp_path / "needles") == folder  # built once


def test_insertion_is_frame_exact_and_leak_free(tmp_path: Path) -> None:
    haystack = write_video(tmp_path / "hay.mp4", num_frames=40, size=(64, 48))
    clip = haystack_clip(haystack, 10, 32, tmp_path / "clip.mov")
    expected = read_frames(haystack, num_frames=10, size=32).frames
    clip_frames = np.stack(list(read_lossless(clip)))
    assert np.array_equal(clip_frames, expected)  # the sampled haystack frames, exactly

    needle = np.zeros((32, 32, 3), dtype=np.uint8)
    needle[:, :, 0] = 250
    for depth, at in ((0, 0), (50, 5), (100, 10)):
        assert needle_position(10, depth) == at
        cell = write_cell(clip, 10, needle, depth, 3, tmp_path / f"cell{depth}.mov")
        frames = np.stack(list(read_lossless(cell)))
        assert len(frames) == 13
        assert np.array_equal(frames[at : at + 3], np.stack([needle] * 3))
        # Around the needle the haystack frames are bit-identical: nothing leaks into them.
        assert np.array_equal(np.concatenate([frames[:at], frames[at + 3 :]]), clip_frames)
        # The engine's own decoder at the model's input size sees the same pixels, one frame a second.
        info = probe(cell)
        plan = plan_frames(info, fps=1.0, max_frames=13)
        assert plan.indices.tolist() == list(range(13)) and plan.timestamps.tolist() == list(range(13))
        seen = np.concatenate([b.frames for b in iter_frames(cell, plan, size=32)])
        assert np.array_equal(seen, frames)


def _grid_task(tmp_path: Path, needles: Path | None = None, frames=(4, 8), depths=(0.0, 100.0)) -> VNIAH:
    haystack = write_video(tmp_path / "hay.mp4", num_frames=30, size=(64, 48))
    task = VNIAH(haystack, frames=frames, depths=depths, needle_seconds=2, frame_size=28, synthetic_needles=needles)
    return task


def test_vniah_grid_scores_and_heatmap(tmp_path: Path) -> None:
    task = _grid_task(tmp_path, write_synthetic_needles(tmp_path / "needles"))
    data = task.load(None, None)
    assert len(data.items) == 2 * 2 * 5
    assert {"haystack", "questions", "needle0", "needle4"} <= set(data.files)
    for item in data.items:  # the question never says where the needle is
        assert item.prompt == f"Question: {item.question}\nAnswer: "
        assert "depth" not in item.prompt.lower() and "%" not in item.prompt
    frames_seen: dict[str, int] = {}

    class CellChat(ScriptedChat):
        def encode(self, path, sampling):
            frames_seen[Path(path).stem] = probe(path).num_frames  # the cell exists while it is asked about
            return super().encode(path, sampling)

    # Right answer ("X) ...") for needles 0-2 everywhere, and for needles 3-4 only at 4 frames, depth 0.
    def script(video: str, prompt: str) -> str:
        item = next(i for i in data.items if i.video == Path(video).stem)
        right = item.groups["needle"] < 3 or (item.groups["frames"] == 4 and item.groups["depth"] == 0)
        return f"{item.answer if right else 'Z'}) answer"

    chat = CellChat(script)
    results = run_scripted(task, data, chat, tmp_path / "run")
    assert chat.turns == [("You are a helpful assistant.", "Best option:(")] * 20  # Video-XL's tester
    assert frames_seen["frames4-depth0-needle0"] == 6 and frames_seen["frames8-depth100-needle3"] == 10
    scores = results["scores"]
    assert scores["grid"] == {"frames": [4, 8], "depths_percent": [0.0, 100.0], "accuracy": [[1.0, 0.6], [0.6, 0.6]]}
    assert scores["overall"] == pytest.approx((1.0 + 0.6 * 3) / 4)
    assert scores["micro"] == pytest.approx((5 + 3 * 3) / 20)
    assert scores["per_cell"]["frames4-depth0"] == {"correct": 5, "total": 5}
    png = (tmp_path / "run" / "heatmap.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "run" / "work").exists()  # cells and haystack clips are removed after the run
    assert "| 0% | 1.00 | 0.60 |" in (tmp_path / "run" / "summary.md").read_text()


def test_vniah_chat_prompt_is_video_xl_testers(tmp_path: Path) -> None:
    """The whole chat text of a V-NIAH question is Video-XL's tester's, with the assistant turn prefilled."""
    task = _grid_task(tmp_path, write_synthetic_needles(tmp_path / "needles"))
    item = task.load(None, None).items[0]
    processor = VideoXLProProcessor(build_byte_tokenizer(), VideoXLProConfig.from_preset("tiny"))
    text = processor.prompt(task.prompt(item, None), system_prompt=task.system_prompt, answer_prefix=task.answer_prefix)
    # Video-XL/NIAH's prompt, except recot's template puts "\n" after <image> (documented difference).
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
        f"Question: {item.question}\nAnswer: <|im_end|>\n<|im_start|>assistant\nBest option:("
    )


@pytest.mark.parametrize(
    ("output", "legacy", "current", "correct"),
    [
        ("D) reading", "D", "D", True),  # the continuation of "Best option:(", as Video-XL's model answers
        ("D", "D", "D", True),
        ("B) sleeping", "B", "B", False),
        ("reading", "reading", "", False),
        ("", "", "", False),
    ],
)
def test_vniah_scores_the_output_after_the_prefix(output: str, legacy: str, current: str, correct: bool) -> None:
    task = VNIAH(haystack=Path("unused.mp4"))
    item = EvalItem(id="x", video="x", question="q", options=["a", "b", "c", "d"], answer="D", prompt="p")
    assert task.score(output, item, "legacy", 0).extracted == legacy
    assert task.score(output, item, "legacy", 0).correct is correct
    assert task.score(output, item, "current", 0).extracted == current
    assert task.score(output, item, "current", 0).correct is correct


def test_vniah_user_needles_missing_images_and_short_haystack(tmp_path: Path) -> None:
    folder = tmp_path / "needles"
    folder.mkdir()
    synthetic = write_synthetic_needles(tmp_path / "synthetic")
    shutil.copy(synthetic / "red_triangle.png", folder / "readingsky.png")
    shutil.copy(synthetic / "blue_circle.png", folder / "-errNPiGXF4")  # the repository's extension-less name
    task = _grid_task(tmp_path, frames=(4,), depths=(50.0,))
    data = task.load(folder, None)  # no qa.json in the folder: the bundled Video-XL file
    assert [i.answer for i in data.items] == ["D", "C"]
    assert data.items[0].question.startswith("Question: What is the young man seated on a cloud")
    assert sorted(s.id for s in data.skipped) == [f"frames4-depth50-needle{k}" for k in (1, 3, 4)]
    assert "'0x6wV-RDB4A_1s.png' not found" in data.skipped[0].reason

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no needle image of .*videoxl_niah_qa.json was found"):
        task.load(empty, None)
    (tmp_path / "other").mkdir()
    too_long = _grid_task(tmp_path / "other", frames=(4, 31))
    with pytest.raises(DataError, match="has 30 frames; --grid-frames asks for up to 31"):
        too_long.load(synthetic, None)
    (folder / "qa.json").write_text(json.dumps({"retrieval_question": ["q"], "answer": ["A", "B"], "needle": ["n"]}))
    with pytest.raises(DataError, match="must be non-empty lists of the same length"):
        task.load(folder, None)
