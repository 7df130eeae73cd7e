"""The runner with a real tiny model: one encode per video, resume after an interruption, bad videos, run folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine_fixtures import tiny_chat, write_video
from eval_fixtures import write_json
from recot.engine import FrameSampling, GenerationOptions
from recot.eval.runner import PREDICTIONS, Evaluation, PredictionStore, RunDirError, read_predictions
from recot.eval.tasks import make_task


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """An MLVU dev file in lmms-eval's layout: 6 questions on 3 videos, and one on a corrupt video."""
    root = tmp_path_factory.mktemp("bench")
    rows = []
    for v in range(3):
        write_video(root / f"needle_{v}.mp4", num_frames=24, seed=v)
        for q in range(2):
            rows.append({"video_name": f"needle_{v}.mp4", "question": f"What is shown {v}-{q}?\n(A) red\n(B) blue",
                         "answer": "AB"[q], "task_type": "needle", "question_id": f"N{v}{q}"})  # fmt: skip
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    rows.append({"video_name": "broken.mp4", "question": "Broken?\n(A) a\n(B) b", "answer": "A", "task_type": "ego",
                 "question_id": "E0"})  # fmt: skip
    write_json(root / "mlvu_dev.json", rows)
    return root


class CountingChat:
    """A real VideoChat that counts encodes and can stop (like Ctrl-C) before its N-th answer."""

    def __init__(self, chat, stop_at: int | None = None) -> None:
        self.chat, self.stop_at = chat, stop_at
        self.encodes, self.asks = [], 0

    def encode(self, path, sampling):
        self.encodes.append(Path(path).name)
        return self.chat.encode(path, sampling)

    def ask(self, encoding, prompt, options, **turn):
        self.asks += 1
        if self.stop_at is not None and self.asks == self.stop_at:
            raise KeyboardInterrupt
        return self.chat.ask(encoding, prompt, options, **turn)


def _evaluation(bench: Path, chat, run_dir: Path, config_extra: dict | None = None) -> Evaluation:
    task = make_task("mlvu-dev")
    data = task.load(bench / "mlvu_dev.json", None)
    config = {"task": task.name, "frames": 8, "max_new_tokens": 4, **(config_extra or {})}
    return Evaluation(task, data, chat, FrameSampling(num_frames=8), GenerationOptions(max_new_tokens=4), config,
                      run_dir, progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def first_run(bench: Path, tmp_path_factory) -> tuple[Path, Path, CountingChat, object]:
    """One full run (the module's tests share its encode cache): (cache dir, run dir, chat, outcome)."""
    root = tmp_path_factory.mktemp("first")
    chat = CountingChat(tiny_chat(root / "cache"))
    outcome = _evaluation(bench, chat, root / "run").run()
    return root / "cache", root / "run", chat, outcome


def test_each_video_encoded_once_and_cached_across_runs(bench: Path, first_run, tmp_path: Path) -> None:
    cache, run_dir, chat, outcome = first_run
    assert chat.encodes == ["needle_0.mp4", "needle_1.mp4", "needle_2.mp4", "broken.mp4"]
    assert (outcome.answered_now, outcome.encoded_videos, outcome.cached_videos) == (6, 3, 0)
    results = outcome.results
    assert results["counts"] == {"questions": 7, "answered": 6, "skipped_questions": 1, "rejected_rows": 0}
    [broken] = results["skipped"]
    assert broken["id"] == "E0" and broken["reason"].startswith("video unusable:") and "broken.mp4" in broken["reason"]
    predictions = read_predictions(run_dir / PREDICTIONS)
    assert [p.id for p in predictions] == ["N00", "N01", "N10", "N11", "N20", "N21"]
    first, second = predictions[0], predictions[1]
    assert first.frames == 8 and first.visual_tokens == 2 * 9 and first.new_tokens <= 4
    assert first.timings.encode > 0 and second.timings.encode == 0.0  # the video's first question pays for it
    assert first.prompt.endswith("Best option: (") and first.question.startswith("What is shown 0-0?")

    again = CountingChat(tiny_chat(cache))
    outcome = _evaluation(bench, again, tmp_path / "run2").run()
    assert (outcome.encoded_videos, outcome.cached_videos) == (0, 3)  # every encoding read from the cache
    assert outcome.results == results  # the same evaluation, the same results

    # Rerunning in the same folder answers nothing new; the corrupt video is tried again (it may have been fixed).
    third = CountingChat(tiny_chat(cache))
    outcome = _evaluation(bench, third, run_dir).run()
    assert third.asks == 0 and third.encodes == ["broken.mp4"] and outcome.answered_now == 0


def test_interrupted_run_resumes_to_the_same_results(bench: Path, first_run, tmp_path: Path) -> None:
    cache, full_dir, _, full = first_run
    expected = (full_dir / "results.json").read_bytes()

    run_dir = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        _evaluation(bench, CountingChat(tiny_chat(cache), stop_at=4), run_dir).run()
    assert [p.id for p in read_predictions(run_dir / PREDICTIONS)] == ["N00", "N01", "N10"]
    assert not (run_dir / "results.json").exists()
    with open(run_dir / PREDICTIONS, "a") as f:  # a line cut short by the interruption
        f.write('{"id": "N11", "video": "needle_1.mp4", "quest')

    chat = CountingChat(tiny_chat(cache))
    outcome = _evaluation(bench, chat, run_dir).run()
    assert chat.asks == 3 and outcome.answered_now == 3  # N11, N20, N21
    assert (run_dir / "results.json").read_bytes() == expected
    lines = (run_dir / PREDICTIONS).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["N00", "N01", "N10", "N11", "N20", "N21"]
    assert outcome.results == full.results


def test_run_folder_with_other_settings_is_refused(bench: Path, first_run) -> None:
    cache, run_dir, _, _ = first_run
    chat = CountingChat(tiny_chat(cache))
    with pytest.raises(RunDirError, match=r"holds a run with other settings \(frames differ\); use another --output"):
        _evaluation(bench, chat, run_dir, {"frames": 16}).run()
    assert chat.encodes == [] and chat.asks == 0


def test_sharded_parts_are_merged_in_dataset_order(tmp_path: Path) -> None:
    from recot.eval.api import ItemTimings, Prediction

    def prediction(item_id: str) -> Prediction:
        return Prediction(id=item_id, video="v", question="q", options=[], answer="A", prompt="p", output="A",
                          extracted="A", correct=True, extractor="legacy", frames=1, visual_tokens=1,
                          visual_tokens_kept=1, new_tokens=1, cache_hit=False,
                          timings=ItemTimings(encode=0.0, answer=0.0))  # fmt: skip

    (tmp_path / "predictions.rank1.jsonl").write_text(prediction("c").model_dump_json() + "\n")
    (tmp_path / "predictions.rank0.jsonl").write_text(
        prediction("b").model_dump_json() + "\n" + prediction("a").model_dump_json() + "\n"
    )
    (tmp_path / PREDICTIONS).write_text(prediction("a").model_dump_json() + "\n")
    store = PredictionStore(tmp_path)
    assert sorted(store.load()) == ["a", "b", "c"]
    store.merge_parts({"a": 0, "b": 1, "c": 2})
    assert [p.id for p in read_predictions(tmp_path / PREDICTIONS)] == ["a", "b", "c"]
    assert not store.parts()
