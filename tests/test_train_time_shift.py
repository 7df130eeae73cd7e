"""data.time_shift: a short video trained on as a stretch of a longer one (its frames' times and every clock of its
text moved later together), seeded per position of the data stream."""

import json
import math

import pytest
import torch

from engine_fixtures import tiny_model_and_processor
from recot.model.processor import shift_clocks
from recot.train.data import Sample, load_dataset, shift_timeline, tokenize_conversation
from recot.train.trainer import model_input, shifted_tokens, time_shift_for, train
from test_train_fixtures import make_config, make_dataset, one_thread, turns  # noqa: F401 (autouse fixture)


def test_shift_clocks_rewrites_every_clock_and_nothing_else():
    text = "00:17 ocean; at 59:30 and 1:02:03, not 3:2, 12:345 or 7:61:00x"
    assert shift_clocks(text, 120) == "02:17 ocean; at 1:01:30 and 1:04:03, not 3:2, 12:345 or 8:03:00x"
    assert shift_clocks(text, 0) == text.replace("7:61:00", "8:01:00")  # written back as a clock reads


def test_time_shift_is_seeded_per_position_and_takes_its_share():
    assert {time_shift_for(0, p, 0, 1.0) for p in range(50)} == {0}
    assert {time_shift_for(0, p, 600, 0.0) for p in range(50)} == {0}
    drawn = [time_shift_for(0, p, 600, 0.5) for p in range(1000)]
    assert drawn == [time_shift_for(0, p, 600, 0.5) for p in range(1000)]
    assert drawn != [time_shift_for(1, p, 600, 0.5) for p in range(1000)]
    assert all(0 <= s <= 600 for s in drawn) and len(set(drawn)) > 100
    assert 400 < sum(s == 0 for s in drawn) < 600  # half unshifted (and ~1/601 of the others draw 0)


def test_a_shifted_sample_has_its_frames_and_clocks_moved_together(tmp_path):
    """The prompt's and the answer's clocks, the groups' timestamp texts and their times all move by the shift;
    the prompt's clock times (what time vectors and grounding read) are the originals plus the shift."""
    make_dataset(tmp_path, rows=1, with_text_row=False)  # writes the videos
    rows = [
        {"id": "v", "video": "v0.mp4", "conversations": turns("<image>\nWhat is at 00:01?", "a ball, 00:00 to 00:02")},
        {"id": "t", "conversations": turns("Say 00:05", "ok")},
    ]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    cfg = make_config(tmp_path / "rows.json", tmp_path / "out")
    samples, _ = load_dataset([str(tmp_path / "rows.json")], str(tmp_path))
    _, processor = tiny_model_and_processor(time_format="clock", time_vector=True)
    video, text = samples
    assert shift_timeline(text, 3600) is text and shift_timeline(video, 0) is video
    moved = shift_timeline(video, 3600)
    assert moved.turns == [("<image>\nWhat is at 1:00:01?", "a ball, 1:00:00 to 1:00:02")]
    base = tokenize_conversation(video, processor)
    tokens = shifted_tokens(video, base, 3600, processor)
    assert shifted_tokens(video, base, 0, processor) is base
    before = model_input(video, base, processor, cfg, 1.0)
    after = model_input(video, tokens, processor, cfg, 1.0, time_shift=3600)
    assert torch.equal(after.timestamps, before.timestamps + 3600)
    assert torch.equal(after.frames, before.frames)
    groups = processor.group_timestamps(after.timestamps)
    assert torch.equal(after.time_sequence_ids, processor.time_sequence_ids(groups))
    assert processor.tokenizer.decode(after.time_sequence_ids[:7]) == "1:00:00"

    def clocks(times: torch.Tensor, labels: torch.Tensor) -> list[float]:
        prompt = times[labels == -100]
        return sorted({t for t in prompt.tolist() if not math.isnan(t)})

    assert clocks(after.input_times, tokens.labels) == [3601.0]
    assert clocks(before.input_times, base.labels) == [1.0]


def test_training_with_a_time_shift_is_deterministic_and_differs(tmp_path):
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=True)
    plain = train(make_config(data, tmp_path / "plain", steps=2, batch=2), progress=False)
    shift = {"time_shift": 900, "time_shift_share": 1.0}
    shifted = train(make_config(data, tmp_path / "a", steps=2, batch=2, data=shift), progress=False)
    again = train(make_config(data, tmp_path / "b", steps=2, batch=2, data=shift), progress=False)
    assert [r["loss"] for r in shifted] == [r["loss"] for r in again]
    assert [r["loss"] for r in shifted] != pytest.approx([r["loss"] for r in plain], rel=1e-4)


def test_sample_of_another_kind_is_never_shifted():
    image = Sample("f", 1, "i", None, "image", None, [("<image>\nColour at 00:01?", "red")], {})
    assert shift_timeline(image, 60) is image
