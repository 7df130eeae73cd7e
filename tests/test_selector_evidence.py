"""The selector's evidence: which frame groups a question's answer is read from, the loss that teaches the selector
to keep them, the rows that carry it (generator, data validation, time shift) and training with it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine_fixtures import tiny_model_and_processor
from recot.data import synthetic_qa as qa
from recot.model.selector import evidence_groups, evidence_loss, min_max_scores
from recot.model.videoxl_pro import layout_from_ids
from recot.train.data import IGNORE_INDEX, load_dataset, shift_timeline, tokenize_conversation
from recot.train.forward import ModelInput, TrainingForward, embed_micro_batch, encode_frames
from recot.train.stages import load_base_model
from recot.train.trainer import train
from test_train_fixtures import make_config, make_dataset, one_thread  # noqa: F401 (autouse fixture)


def test_evidence_groups_are_those_whose_stretch_overlaps_a_span():
    starts = torch.tensor([0.0, 4.0, 8.0, 12.0], dtype=torch.float64)  # group g covers [4g, 4g + 4)
    cases = {
        ((5.0, 6.0),): [False, True, False, False],
        ((3.5, 4.0),): [True, False, False, False],  # ends where group 1 starts
        ((3.0, 9.0),): [True, True, True, False],
        ((15.0, 100.0),): [False, False, False, True],  # the last group is as long as the one before it
        ((16.0, 20.0),): [False] * 4,  # after the video
        ((0.0, 1.0), (12.5, 13.0)): [True, False, False, True],
        (): [False] * 4,
    }
    for spans, expected in cases.items():
        assert evidence_groups(starts, spans).tolist() == expected, spans
    assert evidence_groups(torch.tensor([30.0]), [(1000.0, 1001.0)]).tolist() == [True]  # one group: all the video
    assert evidence_groups(torch.tensor([]), [(0.0, 1.0)]).tolist() == []


def test_evidence_loss_is_the_cross_entropy_against_the_evidence_groups():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(5, 3))  # 5 groups of 3 tokens
    positive = np.array([False, True, False, True, False])
    group = np.log(np.exp(raw).sum(1))
    log_p = group - np.log(np.exp(group).sum())
    expected = -log_p[positive].mean()
    scores = torch.tensor(raw.reshape(-1), requires_grad=True)
    loss = evidence_loss(scores, torch.from_numpy(positive))
    assert math.isclose(float(loss.detach()), expected, rel_tol=1e-6)
    # Its gradient raises every evidence group's tokens and lowers the rest.
    loss.backward()
    grad = scores.grad.view(5, 3)
    assert (grad[torch.from_numpy(positive)] < 0).all() and (grad[torch.from_numpy(~positive)] > 0).all()
    # Only the evidence scoring high: near 0; one of two evidence groups high and the other low: not.
    apart = torch.tensor([0.0, 50.0, 0.0, 50.0, 0.0]).repeat_interleave(3)
    assert float(evidence_loss(apart, torch.from_numpy(positive))) == pytest.approx(math.log(2), abs=1e-6)
    one = torch.tensor([0.0, 50.0, 0.0, -50.0, 0.0]).repeat_interleave(3)
    assert float(evidence_loss(one, torch.from_numpy(positive))) > 20


def test_generated_rows_carry_the_seconds_their_objects_are_shown():
    spec = qa.make_video_spec(qa.split_seeds("train", 1, 7)[0], 4, 4)
    rows = {row["qa"]["qa_type"]: row for row in qa.rows_for(spec, "v.mp4", describe=True, ground_turns=16, object_turns=True)}
    role = {e.role: e for e in spec.events}
    counted = [e for e in spec.events if e.role == "count"]

    def spans(*events: qa.ObjectEvent) -> list[list[float]]:
        return sorted([e.start, e.start + e.seconds] for e in events)

    assert rows["when"]["evidence"] == rows["attribute"]["evidence"] == spans(role["needle"])
    assert rows["count"]["evidence"] == spans(*counted)
    assert rows["order"]["evidence"] == spans(role["first"], role["second"])
    assert rows["objects"]["evidence"] == spans(*spec.events)  # its turns ask about every object
    for kind in ("scene", "describe", "ground"):
        assert "evidence" not in rows[kind]
    # Each turn's own evidence is listed; a conversation cut to some of its turns keeps theirs only.
    turns = qa.make_object_turns(spec)
    assert rows["objects"]["qa"]["evidences"] == [[list(s) for s in t.evidence] for t in turns]
    (when,) = qa.turns_of_type([rows["objects"]], "when")
    assert when["evidence"] == spans(role["needle"])
    (idonly,) = qa.turns_of_type([rows["ground"]], "identify")
    assert "evidence" not in idonly


def test_rows_with_evidence_are_validated_and_shifted_with_their_video(tmp_path):
    data = make_dataset(tmp_path, rows=4, with_text_row=False)
    rows = json.loads(data.read_text())
    rows[0]["evidence"] = [[0.25, 0.5]]
    rows[1]["evidence"] = [[0.5, 0.25]]
    rows[2]["evidence"] = "soon"
    rows.append({"id": "text", "evidence": [[0, 1]], "conversations": [{"from": "human", "value": "hi"},
                                                                       {"from": "gpt", "value": "hi"}]})  # fmt: skip
    data.write_text(json.dumps(rows, indent=1))
    samples, bad = load_dataset([data], tmp_path)
    assert [s.id for s in samples] == ["s0", "s3"]
    assert samples[0].evidence == ((0.25, 0.5),) and samples[1].evidence == ()
    reasons = [b.reason for b in bad]
    assert "evidence span [0.5, 0.25] must have 0 <= start < end (seconds)" in reasons[0]
    assert "evidence" in reasons[1]
    assert "evidence (seconds of a video) but no video" in reasons[2]
    assert shift_timeline(samples[0], 100).evidence == ((100.25, 100.5),)


def test_micro_batch_raw_scores_are_the_selectors_and_the_loss_uses_them():
    """embed_micro_batch's raw scores per video equal QueryAwareSelector.raw_scores on the inference path (whose
    min-max normalisation gives the selection's scores), and TrainingForward sums evidence_loss over the samples
    with evidence in their frames."""
    from recot.train.data import Sample

    model, processor = tiny_model_and_processor(seed=3)
    rng = np.random.default_rng(2)
    items, encoded, expected = [], [], []
    cases = [(8, "What is red?", ((1.0, 2.0),)), (None, "Say hi", ()), (16, "Which is first?", ((5.0, 6.5),)),
             (12, "Anything?", ((100.0, 200.0),))]  # fmt: skip
    for i, (frames, question, evidence) in enumerate(cases):
        media = None if frames is None else Path("v.mp4")
        text = question if media is None else f"<image>\n{question}"
        sample = Sample("rows.json", i, f"s{i}", media, None if media is None else "video", None, [(text, "ok")], {}, evidence)
        tokens = tokenize_conversation(sample, processor)
        video = time_ids = None
        if frames is not None:
            pixels = torch.from_numpy(rng.integers(0, 256, (frames, 98, 98, 3), dtype=np.uint8))
            video = encode_frames(model, pixels, torch.arange(frames, dtype=torch.float64) / 2, checkpointing=False)
            time_ids = processor.time_sequence_ids(video.timestamps)
            with torch.no_grad():
                alone = model.embed_inputs(tokens.input_ids, video, time_ids, 1.0, labels=tokens.labels)
                text_rows = (tokens.input_ids != model.config.image_token_index) & (tokens.labels == IGNORE_INDEX)
                text_embeds = model.language_model.get_input_embeddings()(tokens.input_ids[text_rows])
                layout = layout_from_ids(time_ids, model.config.placeholder_token_id)
                raw = model.selector.raw_scores(alone.time_sequence, layout, text_embeds)
            torch.testing.assert_close(min_max_scores(raw, raw.min(), raw.max()), alone.selection.scores)
            expected.append(raw)
        else:
            expected.append(None)
        items.append(ModelInput(tokens.input_ids, tokens.labels, None, None, time_ids, 1.0, evidence=evidence))
        encoded.append(video)
    with torch.no_grad():
        raw_scores = embed_micro_batch(model, items, encoded).raw_scores
    for got, want in zip(raw_scores, expected, strict=True):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    forward = TrainingForward(model, model, False, None, selector_loss=True)
    forward.encode = lambda samples: encoded  # the videos above, encoded from frames
    with torch.no_grad():
        out = forward(items)
    # Samples 0 and 2 have evidence in their frames; sample 3's lies after its video ends, so it counts for nothing.
    losses = [evidence_loss(expected[i], evidence_groups(encoded[i].timestamps, cases[i][2])) for i in (0, 2)]
    assert out.evidence_samples == 2
    torch.testing.assert_close(out.selector_loss_sum, torch.stack(losses).sum(), rtol=1e-5, atol=1e-5)
    forward.selector_loss = False  # off unless asked
    with torch.no_grad():
        assert forward(items).selector_loss_sum is None


def test_training_with_the_selector_loss_teaches_the_selector_alone(tmp_path):
    """trainable: [selector] with optim.selector_loss_weight: the evidence loss falls and is logged; the LLM and
    projector do not move. Without the weight the column is empty (NaN)."""
    from recot.model.videoxl_pro import VideoXLPro

    data = make_dataset(tmp_path / "data", rows=4, with_text_row=False)
    rows = json.loads(data.read_text())
    for row in rows:
        row["evidence"] = [[0.6, 0.9]]  # 8 frames at 8 fps: two groups, from 0 s and 0.5 s; the second holds it
    data.write_text(json.dumps(rows))
    cfg = make_config(data, tmp_path / "run", steps=12, trainable=["selector"],
                      data={"max_frames": 8, "fps": 8}, optim={"selector_loss_weight": 1.0, "lr": {"selector": 3e-2}})  # fmt: skip
    base, _ = load_base_model(cfg)
    result = train(cfg, progress=False)
    losses = [r["selector_loss"] for r in result]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05, losses
    with open(tmp_path / "run" / "metrics.csv") as f:
        assert "selector_loss" in next(csv.reader(f))
    trained = VideoXLPro.from_pretrained(tmp_path / "run" / "model").state_dict()
    moved = {name for name, tensor in base.state_dict().items() if not torch.equal(tensor, trained[name])}
    assert moved and all(name.startswith("selector.") for name in moved), sorted(moved)
    off = make_config(data, tmp_path / "off", steps=1)
    assert math.isnan(train(off, progress=False)[0]["selector_loss"])


def test_probe_selector_trains_the_selector_and_scores_held_out_evidence(tmp_path, capsys):
    """scripts/probe_selector.py on the tiny preset (2 groups of 16 tokens a video): a budget of every token keeps
    every evidence group (recall 1, for the selector and the random pick alike); a budget of one token keeps the
    evidence group of a row or not, so recall and "all kept" are the same share of the 4 rows."""
    from file_modules import load_file_module
    from test_train_fixtures import write_yaml

    root = Path(__file__).resolve().parents[1]
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=False)
    rows = json.loads(data.read_text())
    for row in rows:
        row["evidence"] = [[0.6, 0.9]]  # at 8 fps, 8 frames: the second of two groups
    data.write_text(json.dumps(rows))
    (tmp_path / "data" / "test.json").write_text(json.dumps(rows))
    cfg = make_config(data, tmp_path / "run", data={"max_frames": 8, "fps": 8, "feature_cache": True})
    config = write_yaml(cfg, tmp_path / "probe.yaml")
    probe = load_file_module(root / "scripts" / "probe_selector.py", "probe_selector")
    for budget in (32, 1):
        out = tmp_path / f"probe{budget}.json"
        assert probe.main([str(config), "--test", str(tmp_path / "data"), "--steps", "3", "--batch", "2",
                           "--budget", str(budget), "--fps", "8", "--out", str(out)]) == 0  # fmt: skip
        result = json.loads(out.read_text())
        assert result["train_rows"] == 4 and result["steps"] == 3 and np.isfinite(result["loss_last_50"])
        for when in ("before", "after"):
            scores = result[when]["data"]
            assert scores["rows"] == 4
            if budget == 32:
                assert scores["recall"] == scores["all_kept"] == scores["random"] == 1.0
            else:
                assert scores["recall"] == scores["all_kept"] and scores["recall"] in (0, 0.25, 0.5, 0.75, 1)
    # Bad input: one line on stderr, exit status 1.
    missing = tmp_path / "nope.yaml"
    assert probe.main([str(missing)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"probe_selector.py: error: cannot read training config {missing}: [Errno 2] No such file or directory: '{missing}'"
    ]
    for row in rows:
        del row["evidence"]
    data.write_text(json.dumps(rows))
    assert probe.main([str(config)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"probe_selector.py: error: no training row of {config} has evidence (recot make-qa-data writes it)"
    ]
