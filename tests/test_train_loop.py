"""Training stages on the tiny preset (CPU): losses fall, frozen parts stay bit-equal, LoRA merges exactly,
saved models reload strictly and answer, resume continues the exact curve, bad rows are reported."""

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine_fixtures import tiny_model_and_processor
from recot.cli import main
from recot.model.checkpoint import CheckpointError
from recot.model.videoxl_pro import VideoXLPro
from recot.train.data import Sample, load_dataset, tokenize_conversation
from recot.train.forward import (
    ModelInput,
    embed_micro_batch,
    encode_frames,
    encode_grouped,
    vision_features,
    visual_similarities,
    visual_similarity,
)
from recot.train.stages import load_base_model, merge_lora, parameter_groups, prepare_stage
from recot.train.trainer import MODEL_DIR, global_batch, keep_ratio_for, latest_checkpoint, train
from test_train_fixtures import make_config, make_dataset, one_thread, same_outputs, write_yaml  # noqa: F401 (autouse fixture)


def state(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def test_training_encoder_matches_inference():
    model, processor = tiny_model_and_processor()
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (6, 98, 98, 3), dtype=np.uint8))
    times = torch.arange(6, dtype=torch.float64) / 2
    reference = model.encode_video(processor.normalize(frames), times)
    model.requires_grad_(False)
    model.compressor.requires_grad_(True)  # sft: the compressor learns, the tower is frozen
    encoded = encode_frames(model, frames, times, checkpointing=True)
    assert encoded.tokens.requires_grad
    torch.testing.assert_close(encoded.tokens, reference.tokens, rtol=0, atol=1e-6)
    assert torch.equal(encoded.timestamps, reference.timestamps)
    # The compressor receives gradients through the checkpointed chunks.
    encoded.tokens.sum().backward()
    assert model.compressor.encoder[0].q.weight.grad.abs().sum() > 0
    assert model.vision_tower.siglip.embeddings.patch_embedding.weight.grad is None


def test_cached_features_of_several_videos_encode_together_as_each_alone():
    """encode_grouped runs the groups of a micro-batch's videos through the compressor in shared chunks (one
    pass of 7 groups, then chunks of 2 that straddle the videos): each video's tokens are those it gets alone,
    and the compressor gets gradients."""
    model, processor = tiny_model_and_processor()
    rng = np.random.default_rng(3)
    videos = [torch.from_numpy(rng.integers(0, 256, (n, 98, 98, 3), dtype=np.uint8)) for n in (8, 4, 16)]
    grouped = [vision_features(model, frames) for frames in videos]
    assert [len(g) for g in grouped] == [2, 1, 4]
    alone = [model.encode_video(processor.normalize(f), torch.arange(len(f), dtype=torch.float64)).tokens for f in videos]
    model.requires_grad_(False)
    model.compressor.requires_grad_(True)
    for chunk in (None, 2):
        tokens = encode_grouped(model, grouped, checkpointing=chunk == 2, chunk_groups=chunk)
        assert [t.shape for t in tokens] == [a.shape for a in alone]
        for t, a in zip(tokens, alone, strict=True):
            torch.testing.assert_close(t, a, rtol=0, atol=1e-6)
    sum(t.sum() for t in tokens).backward()
    assert model.compressor.encoder[0].q.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cannot train the vision tower"):
        model.vision_tower.requires_grad_(True)
        encode_grouped(model, grouped, checkpointing=False)


def test_visual_similarities_of_several_videos_equal_each_alone():
    rng = torch.Generator().manual_seed(0)
    videos = [torch.randn(g, p, 8, generator=rng) + shift for g, p, shift in ((3, 4, 0.0), (1, 4, 5.0), (6, 2, 1.0))]
    together = visual_similarities(videos)
    alone = torch.stack([visual_similarity(v) for v in videos])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    assert len(set(together.tolist())) == 3  # three different videos, three different values


@pytest.mark.parametrize(
    ("keep_ratio", "clock_grounding", "budget"), [(1.0, False, None), (0.6, False, None), (0.6, True, None), (1.0, True, 10)]
)
def test_micro_batch_embedding_equals_embed_inputs_per_sample(keep_ratio, clock_grounding, budget):
    """embed_micro_batch (the training path) gives every sample of a micro-batch what embed_inputs gives it alone:
    videos of different lengths, a text-only sample, clocks in the questions and answers, the selector keeping
    60% of each video's tokens, with and without clock grounding, and 10 tokens of each video with the time
    texts of groups without one dropped (drop_empty_group_times); right-padded with zeros and -100. (Videos of 2 groups or more: one group's
    visual tokens all attend to the same time text, and their scores differ by a few float32 steps, which
    min-max normalisation magnifies whatever the order of the sums.)"""
    from pathlib import Path

    model, processor = tiny_model_and_processor(
        seed=2, time_vector=True, time_format="clock", clock_grounding=clock_grounding,
        drop_empty_group_times=budget is not None,
    )  # fmt: skip
    rng = np.random.default_rng(5)
    items, encoded, expected, dropped = [], [], [], []
    for i, (frames, question, answer) in enumerate([
        (8, "What is on screen at 00:01?", "a red ring at 00:01"), (None, "Say hi at 00:07", "hi"),
        (16, "Which colour is it at 00:03?", "blue"), (12, "What is it?", "a cat, 00:00 to 00:01"),
    ]):  # fmt: skip
        media = None if frames is None else Path("v.mp4")
        text = question if media is None else f"<image>\n{question}"
        sample = Sample("rows.json", i, f"s{i}", media, None if media is None else "video", None, [(text, answer)], {})
        tokens = tokenize_conversation(sample, processor)
        times = processor.clock_times(tokens.input_ids)
        video = time_ids = None
        if frames is not None:
            pixels = torch.from_numpy(rng.integers(0, 256, (frames, 98, 98, 3), dtype=np.uint8))
            video = encode_frames(model, pixels, torch.arange(frames, dtype=torch.float64), checkpointing=False)
            time_ids = processor.time_sequence_ids(video.timestamps)
        items.append(ModelInput(tokens.input_ids, tokens.labels, None, None, time_ids, keep_ratio, None, times))
        encoded.append(video)
        with torch.no_grad():
            alone = model.embed_inputs(tokens.input_ids, video, time_ids, keep_ratio, budget, tokens.labels, times)
        expected.append((alone.inputs_embeds[0], alone.labels[0]))
        if video is not None:  # whether some group kept no token, so lost its time text
            time_texts = len(time_ids) - video.tokens.shape[0] * video.tokens.shape[1]
            dropped.append(len(alone.selection.sequence) < time_texts + len(alone.selection.kept_visual))
    assert any(dropped) == (budget is not None)
    with torch.no_grad():
        inputs, labels, lengths, _ = embed_micro_batch(model, items, encoded, budget)
    assert lengths == [len(e) for e, _ in expected] and inputs.shape == (4, max(lengths), model.config.hidden_size)
    for i, (embeds, sample_labels) in enumerate(expected):
        torch.testing.assert_close(inputs[i, : lengths[i]], embeds, rtol=1e-5, atol=1e-5)
        assert torch.equal(labels[i, : lengths[i]], sample_labels)
        assert not inputs[i, lengths[i] :].any() and (labels[i, lengths[i] :] == -100).all()


def test_selector_never_sees_the_answer():
    model, processor = tiny_model_and_processor()
    frames = np.random.default_rng(1).integers(0, 256, (8, 98, 98, 3), dtype=np.uint8)
    inputs = processor("What is shown?", frames, list(np.arange(8) / 2))
    encoded = model.encode_video(inputs["pixel_values"], inputs["timestamps"])
    results = []
    for answer in ["a red ball", "something else entirely, much longer"]:
        sample = Sample("f", 1, "s", "x.mp4", "video", None, [("<image>\nWhat is shown?", answer)], {})
        tok = tokenize_conversation(sample, processor)
        found = model.embed_inputs(tok.input_ids, encoded, inputs["time_sequence_ids"], 0.8, labels=tok.labels)
        results.append(found.selection)
    assert torch.equal(results[0].scores, results[1].scores)
    assert torch.equal(results[0].kept_visual, results[1].kept_visual)
    # ... and the scores are those of inference, where the prompt ends before the answer.
    at_inference = model.embed_inputs(inputs["input_ids"], encoded, inputs["time_sequence_ids"], 0.8).selection
    assert torch.equal(results[0].scores, at_inference.scores)


def test_align_trains_only_the_projector(tmp_path):
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=False)
    cfg = make_config(data, tmp_path / "run", stage="align", steps=8, optim={"lr": {"projector": 0.05}})
    base, _ = load_base_model(cfg)
    before = state(base)
    rows = train(cfg, progress=False)
    # Every step sees the whole (4-row) set; an untrained LLM responds slowly to its visual tokens alone.
    losses = [r["loss"] for r in rows]
    assert losses[-1] < losses[0] - 0.02 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    keep = [np.mean([keep_ratio_for(0, p, 0.7, 0.99) for p in range(4 * s, 4 * s + 4)]) for s in range(8)]
    np.testing.assert_allclose([r["keep_ratio"] for r in rows], keep, rtol=1e-12)
    # LLM tokens of step 1: per sample the prompt and answer, the group's timestamp text and the kept visual tokens.
    _, processor = load_base_model(cfg)
    samples, _ = load_dataset(cfg.data.train, cfg.data.media_root)
    expected = 0
    for index, position in global_batch(4, 0, 0, 4):
        ids = tokenize_conversation(samples[index], processor).input_ids
        time_ids = processor.time_sequence_ids([0.0])  # 4 frames at 8 fps: one group at 0 s
        visual = processor.config.tokens_per_group
        expected += len(ids) - 1 + len(time_ids) - visual + int(visual * keep_ratio_for(0, position, 0.7, 0.99))
    assert rows[0]["llm_tokens"] == expected
    saved = VideoXLPro.from_pretrained(tmp_path / "run" / MODEL_DIR)
    after = state(saved)
    changed = sorted({k.split(".")[0] for k in before if not torch.equal(before[k], after[k])})
    assert changed == ["projector"]
    with open(tmp_path / "run" / "metrics.csv") as f:
        logged = list(csv.DictReader(f))
    assert [float(r["loss"]) for r in logged] == pytest.approx([r["loss"] for r in rows], rel=1e-12)
    # Every sample has a video: each step logs how alike its visual tokens are (a collapse detector).
    assert all(-1.0 <= float(r["visual_similarity"]) <= 1.0 for r in logged)


def test_visual_similarity_detects_collapsed_tokens():
    e = torch.eye(4)
    assert float(visual_similarity(e[:1].expand(6, 1, 4) * 3.0)) == pytest.approx(1.0)  # one vector: collapsed
    assert float(visual_similarity(e[:2].reshape(2, 1, 4))) == pytest.approx(2**-0.5)  # two orthogonal: 45 degrees
    spread = torch.randn(50, 4, 64, generator=torch.Generator().manual_seed(0))
    assert float(visual_similarity(spread)) < 0.3
    assert float(visual_similarity(spread + 100.0 * torch.randn(64))) > 0.99  # a big shared component dominates


def test_per_module_learning_rates(tmp_path):
    cfg = make_config(
        tmp_path / "x.json", tmp_path / "run", stage="sft", train_vision_tower=True, optim={"weight_decay": 0.1}
    )
    model, _ = load_base_model(cfg)
    groups = parameter_groups(prepare_stage(model, cfg), cfg)
    lrs = {g["name"]: (g["lr"], g["weight_decay"]) for g in groups}
    assert lrs["vision_tower"] == (1e-4, 0.1) and lrs["vision_tower.no_decay"] == (1e-4, 0.0)
    assert lrs["projector"] == (1e-2, 0.1) and lrs["language_model"] == (3e-3, 0.1)
    assert lrs["compressor"] == (1e-3, 0.1) and lrs["selector.no_decay"] == (1e-3, 0.0)
    counted = sum(p.numel() for g in groups for p in g["params"])
    unused = sum(p.numel() for p in model.vision_tower.siglip.post_layernorm.parameters())
    assert counted == sum(p.numel() for p in model.parameters()) - unused


def test_activation_checkpointing_under_either_transformers_name(tmp_path):
    """transformers 5.x renamed gradient_checkpointing_enable (5.17, on a GPU image, has only the old name)."""
    from recot.train.stages import enable_activation_checkpointing

    class Old:
        def gradient_checkpointing_enable(self, kwargs):
            self.kwargs = kwargs

    old = Old()
    enable_activation_checkpointing(old)
    assert old.kwargs == {"use_reentrant": False}
    cfg = make_config(tmp_path / "x.json", tmp_path / "run", stage="sft", gradient_checkpointing=True)
    model, _ = load_base_model(cfg)
    prepare_stage(model, cfg)  # this transformers' name
    assert model.language_model.is_gradient_checkpointing


def test_lora_merge_equals_unmerged_outputs(tmp_path):
    cfg = make_config(tmp_path / "x.json", tmp_path / "run", lora={"enabled": True, "r": 4, "compressor": True})
    model, processor = load_base_model(cfg)
    staged = prepare_stage(model, cfg)
    lora = [n for n, p in staged.model.named_parameters() if p.requires_grad and "lora_" in n]
    assert any(n.startswith("compressor.") for n in lora) and any(n.startswith("language_model.") for n in lora)
    frozen_llm = [n for n, p in staged.model.language_model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert frozen_llm == []
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in staged.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    frames = np.random.default_rng(2).integers(0, 256, (4, 98, 98, 3), dtype=np.uint8)
    inputs = processor("What is shown?", frames, [0.0, 0.5, 1.0, 1.5])
    staged.model.eval()
    with torch.no_grad():
        unmerged = staged.model(**inputs).logits
        merged_model = merge_lora(staged)
        assert not any("lora_" in k for k in merged_model.state_dict())
        merged = merged_model(**inputs).logits
    base, _ = load_base_model(cfg)
    with torch.no_grad():
        plain = base.eval()(**inputs).logits
    assert (unmerged - plain).abs().max() > 1e-3  # the adapters do something
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)


def test_sft_with_lora_saves_a_model_that_reloads_and_answers(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=True, with_image_row=True)
    cfg = make_config(data, tmp_path / "run", stage="sft", steps=4, batch=6, lora={"enabled": True, "r": 4})
    base, _ = load_base_model(cfg)
    before = state(base)
    rows = train(cfg, progress=False)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05
    out = tmp_path / "run" / MODEL_DIR
    saved = VideoXLPro.from_pretrained(out)  # strict: every key, every shape
    after = state(saved)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("vision_tower.") for k in changed)
    targeted = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    llm_changed = {k for k in changed if k.startswith("language_model.")}
    assert llm_changed and all(any(t in k for t in targeted) and k.endswith(".weight") for k in llm_changed)
    assert any(k.startswith("compressor.") for k in changed) and any(k.startswith("selector.") for k in changed)
    assert json.loads((out / "config.json").read_text())["recot"]["extra"]["trained"] == {"stage": "sft", "steps": 4}
    capsys.readouterr()
    video = tmp_path / "data" / "v0.mp4"
    code = main(["ask", str(video), "What is shown?", "--model", str(out), "--max-new-tokens", "4", "--json",
                 "--no-cache", "--no-progress"])  # fmt: skip
    assert code == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["new_tokens"] >= 1 and record["question"] == "What is shown?"
    # A truncated weights file is refused by name.
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        VideoXLPro.from_pretrained(out)


def test_resume_continues_the_exact_loss_curve(tmp_path):
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=True)
    full = train(make_config(data, tmp_path / "full", steps=4, batch=2), progress=False)
    part = train(make_config(data, tmp_path / "part", steps=4, batch=2), progress=False, stop_after=2)
    assert latest_checkpoint(tmp_path / "part").name == "step-00000002"
    stopped = VideoXLPro.from_pretrained(tmp_path / "part" / MODEL_DIR)  # the model as of the stop, marked so
    assert stopped.config.extra["trained"] == {"stage": "sft", "steps": 2, "of": 4}
    rest = train(make_config(data, tmp_path / "part", steps=4, batch=2), resume=True, progress=False)
    assert [r["step"] for r in rest] == [3, 4]
    assert [r["loss"] for r in part + rest] == [r["loss"] for r in full]
    with open(tmp_path / "part" / "metrics.csv") as f:
        assert [float(r["loss"]) for r in csv.DictReader(f)] == pytest.approx([r["loss"] for r in full], rel=1e-12)
    a = state(VideoXLPro.from_pretrained(tmp_path / "full" / MODEL_DIR))
    b = state(VideoXLPro.from_pretrained(tmp_path / "part" / MODEL_DIR))
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], v) for k, v in state(stopped).items())
    assert VideoXLPro.from_pretrained(tmp_path / "part" / MODEL_DIR).config.extra["trained"] == {"stage": "sft", "steps": 4}
    # Settings that change what the steps draw cannot change on a resume.
    changed = make_config(data, tmp_path / "part", steps=6, batch=2, seed=1, data={"time_shift": 60})
    with pytest.raises(ValueError, match=r"^seed \(0 -> 1\), data.time_shift \(0 -> 60\) changed since checkpoint "):
        train(changed, resume=True, progress=False)


def test_cli_reports_bad_rows_and_strict_stops(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", rows=2, with_text_row=False)
    rows = json.loads(data.read_text())
    rows.insert(1, {"video": "gone.mp4", "conversations": rows[0]["conversations"]})
    data.write_text(json.dumps(rows, indent=1))  # the bad row starts on line 12
    line = next(i for i, text in enumerate(data.read_text().splitlines(), 1) if "gone.mp4" in text) - 1
    config = write_yaml(make_config(data, tmp_path / "run", steps=1, batch=2), tmp_path / "c.yaml")
    assert main(["train", "--config", str(config), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 usable rows, 1 bad rows left out" in printed and f"{data}:{line}: video " in printed
    stopped = tmp_path / "stopped"
    argv = ["train", "--config", str(config), "--no-progress", "--output-dir", str(stopped), "--steps", "3"]
    assert main([*argv, "--stop-after", "1"]) == 0 and "step 1: loss " in capsys.readouterr().out
    assert json.loads((stopped / "model" / "config.json").read_text())["recot"]["extra"]["trained"]["of"] == 3
    assert (tmp_path / "run" / "bad_rows.txt").read_text().startswith(f"{data}:{line}: video {tmp_path}/data/gone.mp4")
    assert (
        main(["train", "--config", str(config), "--no-progress", "--strict", "--output-dir", str(tmp_path / "r2")]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith(f"recot train: error: {data}:{line}: video ") and "Traceback" not in err
    (tmp_path / "bad.yaml").write_text("stage: nope\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "recot train: error: training config" in capsys.readouterr().err


def test_vision_feature_cache_gives_the_same_run_and_skips_decoding(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=True, with_image_row=True)
    plain = train(make_config(data, tmp_path / "plain", steps=2, batch=3), progress=False)
    cached_cfg = make_config(data, tmp_path / "cached", steps=2, batch=3, data={"feature_cache": True})
    cached = train(cached_cfg, progress=False)
    assert [r["loss"] for r in cached] == pytest.approx([r["loss"] for r in plain], rel=1e-6)
    assert len(list((tmp_path / "cached" / "features").glob("*.safetensors"))) == 5  # 4 videos + 1 image
    from recot.train import features

    monkeypatch.setattr(features, "load_frames", lambda *a: pytest.fail("decoded a cached video"))
    again = train(make_config(data, tmp_path / "again", steps=2, batch=3, data={"feature_cache": True,
                  "feature_cache_dir": str(tmp_path / "cached" / "features")}), progress=False)  # fmt: skip
    assert [r["loss"] for r in again] == [r["loss"] for r in cached]
    # feature_workers: worker processes decode every video before step 1 (this process never decodes: the
    # patch above fails here, not in them); the same files, the same run.
    filled = train(make_config(data, tmp_path / "filled", steps=2, batch=3, data={"feature_cache": True,
                   "feature_workers": 2}), progress=False)  # fmt: skip
    assert [r["loss"] for r in filled] == [r["loss"] for r in cached]
    for path in (tmp_path / "cached" / "features").glob("*.safetensors"):
        twin = load_file(str(tmp_path / "filled" / "features" / path.name))
        assert all(torch.equal(t, twin[k]) for k, t in load_file(str(path)).items())
    model = load_base_model(cached_cfg)[0]
    fps, max_frames = cached_cfg.data.fps, cached_cfg.data.max_frames
    cache = features.VisionFeatureCache(tmp_path / "filled" / "features", model, fps, max_frames)
    samples, _ = load_dataset(cached_cfg.data.train, cached_cfg.data.media_root)
    assert cache.fill(samples, workers=2, progress=False) == 0  # everything there already
    with pytest.raises(ValueError, match="frozen vision tower"):
        make_config(data, tmp_path / "x", train_vision_tower=True, data={"feature_cache": True})


def test_sft_can_train_the_vision_tower(tmp_path):
    data = make_dataset(tmp_path / "data", rows=2, with_text_row=False)
    cfg = make_config(data, tmp_path / "run", steps=1, batch=2, train_vision_tower=True)
    base, _ = load_base_model(cfg)
    before = state(base, "vision_tower.")
    train(cfg, progress=False)
    after = state(VideoXLPro.from_pretrained(tmp_path / "run" / MODEL_DIR), "vision_tower.")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "vision_tower.siglip.embeddings.patch_embedding.weight" in changed
    assert not any("post_layernorm" in k for k in changed)  # never used in the forward: untouched


def test_accumulation_padding_and_checkpointing_do_not_change_the_run(tmp_path):
    data = make_dataset(tmp_path / "data", rows=4, with_text_row=True, with_image_row=True)
    # 4 micro-batches of 1 with checkpointing, against 2 padded micro-batches of 2 without.
    a = train(make_config(data, tmp_path / "a", steps=2, batch=4), progress=False)
    b = train(
        make_config(
            data, tmp_path / "b", steps=2, batch=4, gradient_checkpointing=False, optim={"micro_batch_size": 2}
        ),
        progress=False,
    )
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5)
    assert [r["llm_tokens"] for r in b] == [r["llm_tokens"] for r in a]
    # The losses are the tight check. Padding and recomputation reorder float sums, and Adam turns that noise on
    # near-zero gradients into lr-sized steps (same_outputs): on one CPU, projector weights ended 0.015 apart
    # (its lr is 1e-2) and logits 0.03 apart, on another within 1e-3.
    same_outputs(tmp_path / "a" / MODEL_DIR, tmp_path / "b" / MODEL_DIR, data.parent / "v0.mp4", atol=0.1)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "a" / "tensorboard")).Reload()
    np.testing.assert_allclose([e.value for e in events.Scalars("train/loss")], [r["loss"] for r in a], rtol=1e-6)


def test_starts_from_a_pretrained_compressor_and_reports_bad_models(tmp_path, capsys):
    from recot.model.checkpoint import save_compressor
    from recot.model.compressor import ReCoTCompressor

    pretrained = ReCoTCompressor(64, norm_groups=32, official_compat=False)  # what pretrain-compressor exports
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(1.0)
    save_compressor(pretrained, tmp_path / "compressor.safetensors")
    cfg = make_config(tmp_path / "x.json", tmp_path / "run", model={"compressor": str(tmp_path / "compressor.safetensors")})
    model, _ = load_base_model(cfg)
    for (name, a), b in zip(model.compressor.state_dict().items(), pretrained.state_dict().values(), strict=False):
        assert torch.equal(a, b), name
    data = make_dataset(tmp_path / "data", rows=1, with_text_row=False)
    config = write_yaml(make_config(data, tmp_path / "run", model={"preset": None, "path": str(tmp_path / "nowhere")}),
                        tmp_path / "c.yaml")  # fmt: skip
    assert main(["train", "--config", str(config), "--no-progress"]) == 1
    assert "recot train: error: model: model directory" in capsys.readouterr().err


def test_model_config_overrides_the_presets_fields(tmp_path):
    """model.config: VideoXLProConfig fields replacing the preset's, for presets only; an unknown field is named."""
    from recot.train.config import TrainConfig

    cfg = TrainConfig.model_validate({"model": {"preset": "tiny", "config": {"compressor_residual": True,
                                                                              "compressor_passthrough_channels": 8}}})  # fmt: skip
    model, _ = load_base_model(cfg)
    assert (model.config.compressor_passthrough_channels, model.compressor.passthrough_channels) == (8, 8)
    assert model.compressor.residual
    unknown = TrainConfig.model_validate({"model": {"preset": "tiny", "config": {"no_such_field": 1}}})
    with pytest.raises(ValueError, match="model.config: .*no_such_field"):
        load_base_model(unknown)
    with pytest.raises(ValueError, match="model.config overrides a preset's fields"):
        TrainConfig.model_validate({"model": {"path": str(tmp_path), "config": {"keep_ratio": 0.5}}})
