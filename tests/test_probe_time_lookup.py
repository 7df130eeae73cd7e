"""scripts/probe_time_lookup.py: the pseudo-videos are the model's LLM input with content ids in the visual slots."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from file_modules import load_file_module
from recot.config import VideoXLProConfig
from recot.model.processor import VideoXLProProcessor
from recot.model.tokenizer import build_byte_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _script():
    return load_file_module(ROOT / "scripts" / "probe_time_lookup.py", "probe_time_lookup")


@pytest.mark.parametrize("query_time", ["any", "start"])
def test_sample_is_the_llm_input_and_its_answer_is_the_asked_group(query_time):
    probe = _script()
    config = VideoXLProConfig.from_preset("lite48")
    processor = VideoXLProProcessor(build_byte_tokenizer(), config)
    task = probe.TimelineTask(processor, classes=10, query_time=query_time)
    rng = np.random.default_rng(3)
    offsets = set()
    for _ in range(20):
        sample = task.sample(rng, 17)
        assert sample.answer_positions == [len(sample.ids) - 1]
        answer = sample.ids[-1]
        assert answer in range(502, 512)
        # Decoded with the content ids as letters, the prompt reads as 17 "mm:ss" + 4 slots, then the question.
        letters = {i: chr(ord("A") + i - 502) for i in range(502, 512)}
        text = "".join(letters.get(i) or processor.tokenizer.decode([i]) for i in sample.ids[:-1])
        groups = re.findall(r"(\d\d):(\d\d)([A-J])\3\3\3", text)
        assert [int(m) * 60 + int(s) for m, s, _ in groups] == [4 * g for g in range(17)]
        assert [letters[c] for c in sample.contents] == [c for _, _, c in groups]
        assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
        minutes, seconds = re.search(r"at (\d\d):(\d\d)\?", text).groups()
        asked = int(minutes) * 60 + int(seconds)
        offsets.add(asked % 4)
        assert letters[answer] == groups[asked // 4][2]  # the group whose 4 seconds cover the asked time
    assert offsets == ({0} if query_time == "start" else {0, 1, 2, 3})


def test_several_questions_continue_the_conversation_and_each_answer_is_labelled():
    """--questions 3: the ChatML turns of a training row follow the first prompt; every answer is its asked group."""
    probe = _script()
    config = VideoXLProConfig.from_preset("lite48")
    processor = VideoXLProProcessor(build_byte_tokenizer(), config)
    task = probe.TimelineTask(processor, classes=10, query_time="any")
    letters = {i: chr(ord("A") + i - 502) for i in range(502, 512)}
    for seed in range(5):
        sample = task.sample(np.random.default_rng(seed), 9, questions=3)
        alone = task.sample(np.random.default_rng(seed), 9)  # the first turn is the one-question sample
        assert sample.ids[: len(alone.ids)] == alone.ids and sample.answer_positions[0] == alone.answer_positions[0]
        text = "".join(letters.get(i) or processor.tokenizer.decode([i]) for i in sample.ids)
        groups = re.findall(r"(\d\d):(\d\d)([A-J])\3\3\3", text)
        asked = [int(m) * 60 + int(s) for m, s in re.findall(r"at (\d\d):(\d\d)\?<\|im_end\|>\n<\|im_start\|>assistant\n", text)]
        answers = re.findall(r"<\|im_start\|>assistant\n([A-J])", text)
        assert len(groups) == 9 and len(asked) == len(answers) == 3
        assert answers == [groups[t // 4][2] for t in asked]
        assert text.count("<|im_start|>user\n") == 3 and text.endswith(answers[-1])
        _, _, labels, _ = probe.collate([sample])
        labelled = (labels[0] != -100).nonzero().flatten().tolist()
        assert labelled == sample.answer_positions
        assert [letters[int(labels[0, i])] for i in labelled] == answers


def test_several_questions_are_the_training_rows_template():
    """The turns equal recot.train.data's tokenisation of the same conversation (answers as one letter each)."""
    from recot.config import IMAGE_TOKEN
    from recot.train.data import Sample as ChatRow
    from recot.train.data import tokenize_conversation

    probe = _script()
    processor = VideoXLProProcessor(build_byte_tokenizer(), VideoXLProConfig.from_preset("lite48"))
    task = probe.TimelineTask(processor, classes=10, query_time="any")
    sample = task.sample(np.random.default_rng(7), 6, questions=4)
    letters = {i: chr(ord("A") + i - 502) for i in range(502, 512)}
    text = "".join(letters.get(i) or processor.tokenizer.decode([i]) for i in sample.ids)
    questions = re.findall(r"(?:Which|What) object is [^?]*\?", text)
    answers = [letters[sample.ids[p]] for p in sample.answer_positions]
    turns = [(f"{IMAGE_TOKEN}\n{questions[0]}", answers[0]), *zip(questions[1:], answers[1:], strict=True)]
    row = ChatRow("rows.jsonl", 1, "probe", Path("v.mp4"), "video", None, turns, {})
    expected = tokenize_conversation(row, processor).input_ids.tolist()[:-1]  # less the last answer's <|im_end|>
    # The probe's ids with its timeline folded back into the one image id and each answer written as its letter.
    timeline = processor.time_sequence_ids(torch.arange(6) * 4.0).tolist()
    at = expected.index(processor.config.image_token_index)
    ours = sample.ids[:at] + [processor.config.image_token_index] + sample.ids[at + len(timeline) :]
    ours = [ord(letters[i]) if i in letters else i for i in ours]
    assert len(questions) == 4 and ours == expected


def test_clock_tokens_write_every_time_in_two_tokens_and_the_answer_is_still_the_asked_group():
    """--clock-tokens: each group's time and the question's are 2 tokens (mm, :ss); the lookup is unchanged."""
    probe = _script()
    llm, processor = probe.load_llm(probe.parse_args(["--preset", "lite48", "--clock-tokens"]))
    assert len(processor.tokenizer) == 420 and llm.config.vocab_size == 512
    task = probe.TimelineTask(processor, classes=10, query_time="any")
    letters = {i: chr(ord("A") + i - 502) for i in range(502, 512)}
    tokens = {processor.tokenizer.decode([i]) for i in range(260, 420)}
    sample = task.sample(np.random.default_rng(1), 30, questions=4)
    pieces = [letters.get(i) or processor.tokenizer.decode([i]) for i in sample.ids]
    text = "".join(pieces)
    groups = re.findall(r"(\d\d):(\d\d)([A-J])\3\3\3", text)
    assert [int(m) * 60 + int(s) for m, s, _ in groups] == [4 * g for g in range(30)]
    clocks = [i for i, p in enumerate(pieces) if p in tokens]
    assert len(clocks) == 2 * (30 + 4)  # every clock, in the timeline and in the 4 questions, is 2 tokens
    asked = [int(m) * 60 + int(s) for m, s in re.findall(r"at (\d\d):(\d\d)\?", text)]
    assert [letters[sample.ids[p]] for p in sample.answer_positions] == [groups[t // 4][2] for t in asked]


def test_curriculum_grows_the_groups_to_the_maximum():
    groups_at = _script().groups_at
    assert [groups_at(s, 2, 12, 100) for s in (1, 10, 50, 99, 100, 500)] == [2, 3, 7, 11, 12, 12]
    assert groups_at(1, 2, 12, 0) == 12


def test_one_group_is_learned_and_the_table_is_written(tmp_path, capsys):
    """With one group the answer is the only content id: a few steps learn to copy it (the loop trains)."""
    probe = _script()
    out = tmp_path / "lookup.json"
    argv = ["--preset", "tiny", "--steps", "40", "--groups", "1", "1", "--lr", "3e-3", "--warmup", "5",
            "--classes", "8", "--eval-every", "20", "--eval-samples", "32", "--json", str(out)]  # fmt: skip
    assert probe.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["step"] for r in rows] == [0, 20, 40]
    assert rows[-1]["accuracy"] == rows[-1]["in_video"] == 1.0 and rows[-1]["chance"] == 1.0
    assert rows[-1]["loss"] < rows[1]["loss"] and rows[0]["loss"] is None and rows[0]["accuracy"] < 0.5
    assert "| 40 | 1 |" in capsys.readouterr().out


def test_bad_settings_are_one_line(capsys):
    probe = _script()
    assert probe.main(["--preset", "tiny", "--classes", "400", "--steps", "1"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "probe_time_lookup.py: error: --classes 400: the vocabulary has only 252 free ids"
    ]
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["--groups", "5", "2"])
    assert exit_info.value.code == 2
    assert "--groups needs 1 <= MIN <= MAX, got 5 2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["--model", "some/dir", "--clock-tokens"])
    assert exit_info.value.code == 2
    assert "--clock-tokens builds a preset's tokenizer; a --model directory brings its own" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        probe.main(["--preset", "videoxl-pro-3b"])  # the released sizes have no byte tokenizer and 3 B weights
    assert exit_info.value.code == 2 and "argument --preset: invalid choice: 'videoxl-pro-3b'" in capsys.readouterr().err


def test_a_saved_model_is_probed_from_its_own_weights_and_a_missing_one_is_one_line(tmp_path, capsys):
    """--model DIR trains that checkpoint's LLM (its held-out score at step 0 is the checkpoint's own)."""
    from model_helpers import tiny_model

    probe = _script()
    model = tiny_model(seed=5)
    model.save_pretrained(tmp_path / "tiny", tokenizer=build_byte_tokenizer())
    argv = ["--steps", "1", "--eval-every", "1", "--eval-samples", "4", "--classes", "4", "--groups", "2", "3"]
    assert probe.main(["--model", str(tmp_path / "tiny"), *argv, "--json", str(tmp_path / "a.json")]) == 0
    assert probe.main(["--model", str(tmp_path / "tiny"), *argv, "--json", str(tmp_path / "b.json")]) == 0
    first, again = (json.loads((tmp_path / n).read_text())["rows"] for n in ("a.json", "b.json"))
    assert first == again and [r["step"] for r in first] == [0, 1]  # deterministic: step 0, then one step
    llm, processor = probe.load_llm(probe.parse_args(["--model", str(tmp_path / "tiny")]))
    for name, tensor in model.language_model.state_dict().items():
        assert torch.equal(llm.state_dict()[name], tensor), name
    assert processor.config.hidden_size == model.config.hidden_size
    capsys.readouterr()
    assert probe.main(["--model", str(tmp_path / "nope"), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("probe_time_lookup.py: error: ") and str(tmp_path / "nope") in err[0]


def test_worker_processes_write_each_step_once_and_runs_repeat(tmp_path):
    """--workers 2: worker k writes steps k+1, k+3, ... from its own generator; two runs give the same rows."""
    probe = _script()
    args = probe.parse_args(["--preset", "tiny", "--steps", "5", "--batch-size", "2", "--groups", "2", "6",
                             "--curriculum", "4", "--classes", "4"])  # fmt: skip
    config = VideoXLProConfig.from_preset("tiny")
    task = probe.TimelineTask(VideoXLProProcessor(build_byte_tokenizer(), config), args.classes, args.query_time)
    args.workers = 2
    loader = torch.utils.data.DataLoader(probe.TrainingBatches(task, args), batch_size=None, num_workers=2)
    batches = list(loader)
    assert len(batches) == 5
    # The same batches, written here: worker k's generator [seed, 0, k] draws steps k+1, k+3, ... in order.
    rngs = [np.random.default_rng([0, 0, k]) for k in range(2)]
    for step, batch in enumerate(batches, start=1):
        rng = rngs[(step - 1) % 2]
        most = probe.groups_at(step, 2, 6, 4)
        expected = [task.sample(rng, int(rng.integers(2, most + 1))) for _ in range(2)]
        for got, want in zip(batch, expected, strict=True):
            assert (got.ids, got.answer_positions, got.contents) == (want.ids, want.answer_positions, want.contents)
            assert np.array_equal(got.times, want.times, equal_nan=True), step
    argv = ["--preset", "tiny", "--steps", "6", "--batch-size", "4", "--groups", "2", "4", "--classes", "4",
            "--eval-every", "3", "--eval-samples", "8", "--workers", "2"]  # fmt: skip
    assert probe.main([*argv, "--json", str(tmp_path / "a.json")]) == 0
    assert probe.main([*argv, "--json", str(tmp_path / "b.json")]) == 0
    first, again = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert first["rows"] == again["rows"] and [r["step"] for r in first["rows"]] == [0, 3, 6]


def test_time_limit_stops_after_the_step_and_save_writes_the_trained_llm(tmp_path, capsys):
    """--time-limit ends with an evaluated last row; --save writes an LLM and tokenizer that reload as trained."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    probe = _script()
    argv = ["--preset", "tiny", "--steps", "50", "--batch-size", "2", "--groups", "2", "3", "--classes", "4",
            "--eval-every", "25", "--eval-samples", "4", "--time-limit", "1e-6", "--save", str(tmp_path / "llm"),
            "--json", str(tmp_path / "run.json")]  # fmt: skip
    assert probe.main(argv) == 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert [r["step"] for r in record["rows"]] == [0, 1] and isinstance(record["training_seconds"], float)
    assert "--time-limit 1e-06 s reached after step 1" in capsys.readouterr().out
    saved = Qwen2ForCausalLM.from_pretrained(tmp_path / "llm")
    fresh, _ = probe.load_llm(probe.parse_args(argv))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "llm")
    assert tokenizer("01:34").input_ids == build_byte_tokenizer()("01:34").input_ids
    changed = [n for n, t in saved.state_dict().items() if not torch.equal(t, fresh.state_dict()[n])]
    assert changed and len(changed) > len(saved.state_dict()) // 2  # one AdamW step moved the weights
    # The saved LLM scores the held-out set exactly as the last row says (it is the trained one, not the seed's).
    task = probe.TimelineTask(VideoXLProProcessor(build_byte_tokenizer(), VideoXLProConfig.from_preset("tiny")),
                              4, "any")  # fmt: skip
    held_out_rng = np.random.default_rng([0, 1])
    held_out = [task.sample(held_out_rng, int(held_out_rng.integers(2, 4))) for _ in range(4)]
    assert probe.evaluate(saved, held_out, 2) == {k: record["rows"][-1][k] for k in ("accuracy", "in_video", "chance")}


def test_a_missing_device_is_one_line(capsys):
    probe = _script()
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert probe.main(["--preset", "tiny", "--steps", "1", "--device", "cuda"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == ["probe_time_lookup.py: error: --device cuda: no such device on this machine"]


def test_times_mark_each_groups_text_and_slots_and_the_questions_clock():
    """--time-vector's times: a group's middle second on its text and slots, the asked second on the clock."""
    probe = _script()
    config = VideoXLProConfig.from_preset("lite48")
    processor = VideoXLProProcessor(build_byte_tokenizer(), config)
    task = probe.TimelineTask(processor, classes=10, query_time="any")
    for seed in range(4):
        sample = task.sample(np.random.default_rng(seed), 7, questions=3)
        assert len(sample.times) == len(sample.ids)
        text = {t: "" for t in sample.times if not math.isnan(t)}
        for i, t in zip(sample.ids, sample.times, strict=True):
            if not math.isnan(t):
                text[t] += "#" if i in range(502, 512) else processor.tokenizer.decode([i])
        timeline = [t for t in text if t % 4 == 1.5]  # 1.5 s into a group: its middle second
        assert timeline == [4 * g + 1.5 for g in range(7)]
        for g, t in enumerate(timeline):
            assert text[t] == processor.time_text(4.0 * g) + "####"  # its timestamp text, then its 4 slots
        decoded = "".join(processor.tokenizer.decode([i]) if i < 502 else "#" for i in sample.ids)
        asked = re.findall(r"at (\d\d:\d\d)\?", decoded)
        clocks = [t for t in text if t % 4 != 1.5]
        clock = {t: f"{int(t) // 60:02d}:{int(t) % 60:02d}" for t in clocks}
        assert len(asked) == 3 and set(clock.values()) == set(asked)
        for t in clocks:  # the clock of each question asking that second, and nothing else
            assert text[t] == clock[t] * asked.count(clock[t])


def test_time_vector_changes_the_input_and_runs_repeat(tmp_path):
    probe = _script()
    argv = ["--preset", "tiny", "--steps", "4", "--batch-size", "2", "--groups", "2", "4", "--classes", "4",
            "--eval-every", "2", "--eval-samples", "8", "--questions", "2"]  # fmt: skip
    for name, extra in (("a", ["--time-vector"]), ("b", ["--time-vector"]), ("c", [])):
        assert probe.main([*argv, *extra, "--json", str(tmp_path / f"{name}.json")]) == 0
    a, b, c = (json.loads((tmp_path / f"{n}.json").read_text())["rows"] for n in "abc")
    assert a == b and a[-1]["loss"] != c[-1]["loss"]
    llm, processor = probe.load_llm(probe.parse_args(["--preset", "tiny"]))
    task = probe.TimelineTask(processor, 4, "any")
    batch = probe.collate([task.sample(np.random.default_rng(0), 3)])
    with torch.no_grad():
        plain = probe.forward(llm, batch, time_vector=False).logits
        timed = probe.forward(llm, batch, time_vector=True).logits
        direct = llm(input_ids=batch[0], attention_mask=batch[1]).logits
    assert torch.equal(plain, direct) and not torch.allclose(plain, timed)
    untimed = batch[3][0].isnan()
    first_timed = int((~untimed).nonzero()[0])
    assert torch.allclose(plain[0, :first_timed], timed[0, :first_timed])  # causal: nothing before changes
