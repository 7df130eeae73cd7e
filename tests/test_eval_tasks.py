"""Loaders, prompts, scorers and aggregation of each benchmark, on small files in the published shapes.

A scripted chat gives the raw outputs, so every score here is computed by hand
from the benchmark's published rule.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine_fixtures import write_video
from eval_fixtures import ScriptedChat, mlvu_original_rows, run_scripted, touch_videos, write_json, write_parquet
from recot.eval.api import DataError, VideoContext
from recot.eval.tasks import TASK_NAMES, make_task
from recot.eval.tasks.videomme import read_srt, subtitles_at_frames


def _by_prompt(items, outputs: dict[str, str]):
    """A script answering each item (found by its question text inside the prompt) with ``outputs[item.id]``."""
    table = [(item.question, outputs[item.id]) for item in items]

    def script(video: str, prompt: str) -> str:
        matches = [out for question, out in table if question in prompt]
        assert len(matches) == 1, prompt
        return matches[0]

    return script


# ----- MLVU ---------------------------------------------------------------------------------------
@pytest.fixture
def mlvu_dir(tmp_path: Path) -> Path:
    rows = mlvu_original_rows()
    rows["1_plotQA.json"].append(
        {"video": "movie101_9.mp4", "duration": 10.0, "question": "Missing video?", "candidates": ["a", "b"],
         "answer": "a", "question_type": "plotQA"}
    )  # fmt: skip
    for name, file_rows in rows.items():
        write_json(tmp_path / "MLVU" / "json" / name, file_rows)
    touch_videos(tmp_path / "MLVU" / "video", ["1_plotQA/movie101_1.mp4", "1_plotQA/movie101_2.mp4",
                                               "1_plotQA/movie101_3.mp4", "2_needle/needle_7.mp4"])  # fmt: skip
    return tmp_path / "MLVU"


def test_mlvu_original_layout_legacy_and_current(mlvu_dir: Path, tmp_path: Path) -> None:
    task = make_task("mlvu-dev")
    data = task.load(mlvu_dir, None)
    assert [i.answer for i in data.items] == ["B", "A", "D", "A", "C"]
    assert [i.groups["task_type"] for i in data.items] == ["plotQA"] * 4 + ["needle"]
    [rejected] = data.skipped
    assert "answer 'z' is not one of the candidates" in rejected.reason and "2_needle.json:1" in rejected.reason
    first = data.items[0]
    assert first.prompt == ("\nWhat does the hero hold?\n(A) a sword\n(B) a cup\n(C) a map\n(D) a lamp"
                            "\nOnly give the best option.\n\nBest option: (")  # fmt: skip
    assert first.video == str(mlvu_dir / "video" / "1_plotQA" / "movie101_1.mp4")

    outputs = {data.items[0].id: "B) a cup", data.items[1].id: "A. river", data.items[2].id: "D",
               data.items[3].id: "A", data.items[4].id: "(C) book"}  # fmt: skip
    chat = ScriptedChat(_by_prompt(data.items, outputs))
    legacy = run_scripted(task, data, chat, tmp_path / "legacy")
    scores = legacy["scores"]
    # "A. river" is wrong under the legacy rule; the missing video is skipped, not scored.
    assert scores["per_task_type"]["plotQA"] == {"correct": 2, "total": 3, "accuracy": pytest.approx(200 / 3)}
    assert scores["per_task_type"]["needle"] == {"correct": 1, "total": 1, "accuracy": 100.0}
    assert scores["per_task_type"]["ego"] == {"correct": 0, "total": 0, "accuracy": 0.0}
    assert scores["m_avg_macro"] == pytest.approx((200 / 3 + 100) / 7) == scores["overall"]
    assert scores["m_avg_micro"] == pytest.approx(75.0)
    assert legacy["counts"] == {"questions": 5, "answered": 4, "skipped_questions": 1, "rejected_rows": 1}
    missing = [s for s in legacy["skipped"] if s["id"] == data.items[3].id]
    assert missing and "movie101_9.mp4" in missing[0]["reason"] and "no such file" in missing[0]["reason"]
    assert len(chat.encoded) == 4  # the missing video never reached the model
    assert chat.turns == [(None, "")] * 4  # MLVU: the model's own system prompt; "Best option: (" is user text

    current = run_scripted(task, data, ScriptedChat(_by_prompt(data.items, outputs)), tmp_path / "current", "current")
    assert current["scores"]["per_task_type"]["plotQA"]["correct"] == 3
    assert current["scores"]["m_avg_micro"] == pytest.approx(100.0)


def test_mlvu_lmms_eval_parquet_layout(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    rows = [
        {"video_name": "needle_1.mp4", "duration": 400.0, "question": "What happens?\n(A) x\n(B) y",
         "candidates": ["x", "y"], "answer": "B", "task_type": "needle", "question_id": "Q0"},
        {"video_name": "ego_2.mp4", "duration": 100.0, "question": "Where am I?\n(A) home\n(B) park\n(C) shop",
         "candidates": ["home", "park", "shop"], "answer": "C", "task_type": "ego", "question_id": "Q1"},
        {"video_name": "x.mp4", "duration": 1.0, "question": "Old code?", "candidates": ["a"], "answer": "A",
         "task_type": "NQA", "question_id": "Q2"},
    ]  # fmt: skip
    write_parquet(tmp_path / "mlvu" / "data" / "test-00000-of-00001.parquet", rows)
    touch_videos(tmp_path / "mlvu", ["needle_1.mp4", "ego_2.mp4"])
    task = make_task("mlvu-dev")
    data = task.load(tmp_path / "mlvu", None)
    assert [i.id for i in data.items] == ["Q0", "Q1"]
    assert data.items[1].options == ["home", "park", "shop"]
    assert data.items[0].prompt.startswith("\nWhat happens?\n(A) x\n(B) y\nOnly give")
    assert data.skipped[0].id == "Q2" and "task type 'NQA'" in data.skipped[0].reason
    results = run_scripted(task, data, ScriptedChat(_by_prompt(data.items, {"Q0": "B", "Q1": "B"})), tmp_path / "run")
    assert results["scores"]["m_avg_micro"] == 50.0
    assert results["scores"]["m_avg_macro"] == pytest.approx(100 / 7)
    assert set(results["config"]) >= {"task", "extractor"}


def test_mlvu_test_split_has_nine_types(tmp_path: Path) -> None:
    task = make_task("mlvu-test")
    rows = [{"video_name": "s.mp4", "question": "Q?\n(A) a\n(B) b", "answer": "A", "task_type": "sportsQA"}]
    write_json(tmp_path / "mlvu_test.json", rows)
    touch_videos(tmp_path, ["s.mp4"])
    data = task.load(tmp_path / "mlvu_test.json", None)
    results = run_scripted(task, data, ScriptedChat(lambda v, p: "A"), tmp_path / "run")
    assert len(results["scores"]["per_task_type"]) == 9
    assert results["scores"]["overall"] == pytest.approx(100 / 9)


# ----- Video-MME ------------------------------------------------------------------------------------
def _videomme_rows() -> list[dict]:
    rows = []
    for n, (video, duration) in enumerate([("aaa", "short"), ("bbb", "short"), ("ccc", "medium"), ("ddd", "long")]):
        for k in range(2):
            rows.append({
                "video_id": f"{n:03d}", "duration": duration, "domain": "Knowledge" if n < 2 else "Sports Competition",
                "sub_category": "Humanity & History", "url": "https://example.invalid", "videoID": video,
                "question_id": f"{n:03d}-{k + 1}",
                "task_type": "Counting Problem" if k == 0 else "Information Synopsis",
                "question": f"Question {n}-{k}?", "options": ["A. one.", "B. two.", "C. three.", "D. four."],
                "answer": "ABCD"[(n + k) % 4],
            })  # fmt: skip
    return rows


def test_videomme_loader_prompt_and_breakdowns(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    write_parquet(tmp_path / "videomme" / "test-00000-of-00001.parquet", _videomme_rows())
    touch_videos(tmp_path / "data", ["aaa.mp4", "bbb.MP4", "ccc.mkv"])  # ddd is missing
    task = make_task("videomme")
    data = task.load(tmp_path, None)
    assert [Path(i.video).name for i in data.items][::2] == ["aaa.mp4", "bbb.MP4", "ccc.mkv", "ddd.mp4"]
    assert data.items[0].prompt == (
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\nQuestion 0-0?\n"
        "A. one.\nB. two.\nC. three.\nD. four.\n\nAnswer with the option's letter from the given choices directly."
    )
    # short: 3 of 4 right ("The answer is B" -> B; "Based on..." -> B, wrong for answer C); medium: 1 of 2.
    outputs = {"000-1": "A", "000-2": "The answer is B", "001-1": "B.", "001-2": "Based on the video, C",
               "002-1": "C", "002-2": "none", "003-1": "D", "003-2": "A"}  # fmt: skip
    results = run_scripted(task, data, ScriptedChat(_by_prompt(data.items, outputs)), tmp_path / "run")
    scores = results["scores"]
    assert scores["per_duration"]["short"] == {"correct": 3, "total": 4, "accuracy": 75.0}
    assert scores["per_duration"]["medium"] == {"correct": 1, "total": 2, "accuracy": 50.0}
    assert "long" not in scores["per_duration"]  # its video is missing: both questions skipped
    assert scores["overall"] == pytest.approx(100 * 4 / 6)
    assert scores["mean_of_durations"] == pytest.approx(62.5)
    assert scores["per_domain"]["Knowledge"]["accuracy"] == 75.0
    assert scores["per_task_type"]["Counting Problem"] == {"correct": 3, "total": 3, "accuracy": 100.0}
    assert results["counts"]["skipped_questions"] == 2

    short = make_task("videomme-short")
    assert [i.groups["duration"] for i in short.load(tmp_path, None).items] == ["short"] * 4


def test_videomme_subtitles_follow_the_frames_seen(tmp_path: Path) -> None:
    srt = tmp_path / "subtitle" / "aaa.srt"
    srt.parent.mkdir()
    srt.write_text(
        '1\r\n00:00:00,000 --> 00:00:00,200\r\n<font color="white" size=".72c">one</font>\r\n\r\n'
        '2\r\n00:00:00,500 --> 00:00:00,600\r\n<font color="white" size=".72c">two</font>\r\n\r\n'
        '3\r\n00:00:00,600 --> 00:00:01,100\r\n<font color="white" size=".72c">three</font>\r\n\r\n'
        "4\r\n00:00:00,000 --> 00:00:01,500\r\nno font tag\r\n"
    )
    cues = read_srt(srt)
    assert [round(c[0], 3) for c in cues] == [0.0, 0.5, 0.6, 0.0]
    # 30 fps: cue 1 spans frames [0, 6), cue 2 [15, 18), cue 3 [18, 33); frames 0, 10, 20, 30 seen.
    assert subtitles_at_frames(cues, 30.0, [0, 10, 20, 30]) == "one\nthree"
    assert subtitles_at_frames(cues, 30.0, [16]) == "two"

    write_json(tmp_path / "videomme.json", [_videomme_rows()[0], _videomme_rows()[2]])
    (tmp_path / "data").mkdir()
    write_video(tmp_path / "data" / "aaa.mp4", num_frames=48, fps=30)
    write_video(tmp_path / "data" / "bbb.mp4", num_frames=48, fps=30)
    task = make_task("videomme-w-subtitle")
    data = task.load(tmp_path / "videomme.json", None)
    prompt = task.prompt(data.items[0], VideoContext(Path(data.items[0].video), [0, 10, 20, 30]))
    assert prompt.startswith("This video's subtitles are listed below: \none\nthree\nSelect the best answer")
    assert prompt.endswith("D. four.\nThe best answer is:")
    no_srt = task.prompt(data.items[1], VideoContext(Path(data.items[1].video), [0]))
    assert no_srt.startswith("This video's subtitles are listed below: \nNo subtitles available\nSelect")


# ----- LongVideoBench --------------------------------------------------------------------------------
def test_longvideobench_official_json_and_parquet(tmp_path: Path) -> None:
    rows = [
        {"video_id": "v1", "question": "Which subtitles appear?", "candidates": ["p", "q", "r", "s"],
         "correct_choice": 1,
         "duration_group": 600, "question_category": "TOS", "id": "v1_0", "video_path": "v1.mp4"},
        {"video_id": "v1", "question": "What happens to his clothes?", "candidates": ["a", "b", "c", "d", "e"],
         "correct_choice": 4, "duration_group": 600, "question_category": "TAA", "id": "v1_1", "video_path": "v1.mp4"},
        {"video_id": "v2", "question": "Which one?", "candidates": ["a", "b"], "correct_choice": 0,
         "duration_group": 15, "question_category": "TOS", "id": "v2_0", "video_path": "v2.mp4"},
        {"video_id": "v3", "question": "Bad", "candidates": ["a"], "correct_choice": 3, "id": "v3_0",
         "video_path": "v3.mp4"},
    ]  # fmt: skip
    write_json(tmp_path / "lvb_val.json", rows)
    touch_videos(tmp_path / "videos", ["v1.mp4", "v2.mp4"])
    task = make_task("longvideobench-val")
    data = task.load(tmp_path, None)
    assert [i.answer for i in data.items] == ["B", "E", "A"]
    post = "Answer with the option's letter from the given choices directly.\n"
    assert data.items[0].prompt == "Which subtitles appear?\nA. p\nB. q\nC. r\nD. s\n" + post
    assert data.skipped[0].id == "v3_0"
    fallback = random.Random("7\0v2_0").choice(["A", "B"])  # the seeded fallback for item v2_0, --seed 7
    outputs = {"v1_0": "The best answer is B", "v1_1": "D", "v2_0": ""}
    results = run_scripted(task, data, ScriptedChat(_by_prompt(data.items, outputs)), tmp_path / "run", seed=7)
    scores = results["scores"]
    expected = 1 + (fallback == "A")
    assert scores["overall"] == pytest.approx(expected / 3)
    assert scores["random_fallbacks"] == 1
    assert scores["per_question_category"]["TAA"] == {"correct": 0, "total": 1, "accuracy": 0.0}
    assert scores["per_duration_group"]["600"] == {"correct": 1, "total": 2, "accuracy": 0.5}

    pytest.importorskip("pyarrow")
    hf_rows = [{"question": "Which one?", "option0": "a", "option1": "b", "option2": "N/A", "option3": "N/A",
                "option4": "N/A", "correct_choice": 1, "id": "h0", "video_path": "v2.mp4", "duration_group": 15,
                "question_category": "S2E"}]  # fmt: skip
    write_parquet(tmp_path / "hf" / "validation-00000-of-00001.parquet", hf_rows)
    [item] = task.load(tmp_path / "hf", tmp_path / "videos").items
    assert item.options == ["a", "b"] and item.answer == "B" and item.video == str(tmp_path / "videos" / "v2.mp4")


# ----- VNBench -------------------------------------------------------------------------------------------
def test_vnbench_four_tries_all_correct(tmp_path: Path) -> None:
    opts = ["cow", "sheep", "train", "tv"]
    orders = [opts, opts[::-1], opts[1:] + opts[:1], opts[2:] + opts[:2]]
    rows = []
    for video, kind in (("v_a_ret_insert1.mp4", "ret_insert1"), ("v_b_ret_insert1.mp4", "ret_insert1"),
                        ("v_c_ord_insert2.mp4", "ord_insert2")):  # fmt: skip
        for t, order in enumerate(orders):
            gt = "train" if t != 3 else order.index("train")  # the answer as text, once as an index
            rows.append({"video": f"./VNBench/{video}", "question": f"What is in {video}?", "options": order, "gt": gt,
                         "type": kind, "try": t, "needle_time": [1.0], "length": 60})  # fmt: skip
    rows.append(
        {"video": "./VNBench/v_d.mp4", "question": "?", "options": opts, "gt": "plane", "type": "ret_edit1", "try": 0}
    )
    write_json(tmp_path / "VNBench-main-4try.json", rows)
    touch_videos(tmp_path / "VNBench", ["v_a_ret_insert1.mp4", "v_b_ret_insert1.mp4", "v_c_ord_insert2.mp4"])
    task = make_task("vnbench")
    data = task.load(tmp_path, None)
    assert len(data.items) == 12 and data.skipped[0].reason.endswith("gt 'plane' is not one of the options")
    assert data.items[1].answer == "B" and data.items[3].answer == "A"  # "train" in the reversed and rotated orders
    assert (
        data.items[0].prompt
        == "Question: What is in v_a_ret_insert1.mp4?\nOptions:\n(A) cow\n(B) sheep\n(C) train\n(D) tv\n"
    )

    def script(video: str, prompt: str) -> str:
        item = next(i for i in data.items if i.prompt == prompt)
        wrong = "A" if item.answer != "A" else "B"
        if item.id == "v_b_ret_insert1_2":
            return f"({wrong}) something."  # sample b: 3 of 4 tries right
        return f"The answer is ({item.answer}) it."

    chat = ScriptedChat(script)
    results = run_scripted(task, data, chat, tmp_path / "run")
    # Every try is asked with the Video-XL authors' VNBench system prompt and no prefill.
    official_system = ("Carefully watch this video and pay attention to every detail. Based on your observations, "
                       "select the best option that accurately addresses the question.")  # fmt: skip
    assert chat.turns == [(official_system, "")] * 12
    scores = results["scores"]
    assert scores["per_type"]["ret_insert1"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert scores["per_type"]["ord_insert2"] == {"correct": 1, "total": 1, "accuracy": 1.0}
    assert scores["overall"] == pytest.approx(0.75)
    assert scores["try_accuracy"] == pytest.approx(11 / 12)
    assert scores["samples"] == 3 and scores["incomplete_samples"] == 0
    assert [i.groups["sample"] for i in task.limit(data.items, 1)] == ["v_a_ret_insert1"] * 4


# ----- shared behaviour --------------------------------------------------------------------------------
def test_loader_errors_name_the_file(tmp_path: Path) -> None:
    task = make_task("mlvu-dev")
    with pytest.raises(DataError, match="no annotation file under"):
        task.load(tmp_path, None)
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(DataError, match="broken.json is not valid JSON"):
        task.load(tmp_path / "broken.json", None)
    write_json(tmp_path / "rows.json", [{"video_name": "a.mp4"}])
    with pytest.raises(DataError, match=r"no usable question .* 1 rows \(first problem: rows.json:0: missing fields"):
        task.load(tmp_path / "rows.json", None)
    pytest.importorskip("pyarrow")
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read parquet file"):
        make_task("videomme").load(tmp_path / "x.parquet", None)


def test_bad_answers_are_rejected_rows_with_the_same_words_in_every_loader(tmp_path: Path) -> None:
    """The shared ground-truth readers: a letter, an index or an option text; anything else is one skipped row."""
    from recot.eval.tasks._rows import index_answer, letter_answer, lettered, text_answer

    assert letter_answer(" C ") == "C" and index_answer("2", ["x", "y", "z"], "gt") == "C"
    assert text_answer("y", ["x", "y"], "gt") == "B"
    assert lettered(["x", "y"], "({letter}) {option}") == "(A) x\n(B) y"
    lvb = [{"question": "q", "candidates": ["a", "b"], "correct_choice": c, "video_path": "v.mp4", "id": f"r{c}"}
           for c in (1, 2, "one")]  # fmt: skip
    write_json(tmp_path / "lvb" / "lvb_val.json", lvb)
    data = make_task("longvideobench-val").load(tmp_path / "lvb", None)
    assert [i.answer for i in data.items] == ["B"]
    assert [s.reason for s in data.skipped] == [
        "lvb_val.json:1: correct_choice 2 is not an index of the 2 candidates",
        "lvb_val.json:2: correct_choice 'one' is not an integer",
    ]
    mme = [dict(_videomme_rows()[0], question_id=f"q{i}", answer=a) for i, a in enumerate(("b", "AB"))]
    write_json(tmp_path / "mme.json", mme)
    with pytest.raises(DataError, match=r"first problem: mme.json:0: answer 'b' is not an option letter"):
        make_task("videomme").load(tmp_path / "mme.json", None)


def test_registry_names() -> None:
    assert set(TASK_NAMES) >= {"mlvu-dev", "mlvu-test", "videomme", "videomme-long-w-subtitle", "longvideobench-val",
                               "vnbench", "vniah"}  # fmt: skip
    with pytest.raises(KeyError, match="unknown task 'mmlu'"):
        make_task("mmlu")
