"""Training data: FILE:LINE reports of bad rows, strict mode, ChatML tokens with answer-only labels, configs."""

import json

import pytest
import torch

from recot.config import VideoXLProConfig
from recot.model.processor import VideoXLProProcessor
from recot.model.tokenizer import build_byte_tokenizer
from recot.train.config import TrainConfig, load_train_config
from recot.train.data import IGNORE_INDEX, DataError, Sample, load_dataset, read_rows, tokenize_conversation
from test_train_fixtures import make_dataset, one_thread  # noqa: F401 (autouse fixture)


def processor() -> VideoXLProProcessor:
    return VideoXLProProcessor(build_byte_tokenizer(), VideoXLProConfig.from_preset("tiny"))


def sample(turns, media="x.mp4", system=None) -> Sample:
    return Sample("f.json", 1, "s", None if media is None else media, "video" if media else None, system, turns, {})


def test_first_turn_is_the_inference_prompt_and_labels_cover_answers_only():
    proc = processor()
    s = sample([("<image>\nWhat happens?", "A dog jumps."), ("And then?", "It swims.")])
    tok = tokenize_conversation(s, proc)
    prompt = proc.tokenize_prompt("What happens?")
    assert torch.equal(tok.input_ids[: len(prompt)], prompt)
    assert (tok.labels[: len(prompt)] == IGNORE_INDEX).all()
    ids = tok.input_ids.tolist()
    # Decode the labelled spans: exactly the two answers, each closed by <|im_end|>.
    spans, current = [], []
    for i, label in zip(ids, tok.labels.tolist(), strict=False):
        if label != IGNORE_INDEX:
            assert label == i
            current.append(i)
        elif current:
            spans.append(current)
            current = []
    if current:
        spans.append(current)
    texts = [proc.tokenizer.decode(s) for s in spans]
    assert texts == ["A dog jumps.<|im_end|>", "It swims.<|im_end|>"]
    text = proc.tokenizer.decode([i for i in ids if i >= 0])
    assert text == (
        f"<|im_start|>system\n{proc.config.system_prompt}<|im_end|>\n<|im_start|>user\n\nWhat happens?<|im_end|>\n"
        "<|im_start|>assistant\nA dog jumps.<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n"
        "<|im_start|>assistant\nIt swims.<|im_end|>"
    )
    assert ids.count(proc.config.image_token_index) == 1
    assert tok.num_label_tokens == len("A dog jumps.") + len("It swims.") + 2


def test_text_only_and_custom_system_prompt():
    proc = processor()
    tok = tokenize_conversation(sample([("Hi", "Hello")], media=None, system="Be brief."), proc)
    assert proc.config.image_token_index not in tok.input_ids.tolist()
    assert proc.tokenizer.decode(tok.input_ids.tolist()).startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_bad_rows_are_reported_with_file_and_line(tmp_path):
    make_dataset(tmp_path, rows=1, with_text_row=False)
    good = {
        "video": "v0.mp4",
        "conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}],
    }
    rows = [
        good,
        {"video": "v0.mp4"},  # line 3: no conversations
        {
            "video": "v0.mp4",
            "conversations": [{"from": "human", "value": "<image>\n<image>\nQ"}, {"from": "gpt", "value": "A"}],
        },
        {"video": "v0.mp4", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "  "}]},
        {"video": "missing.mp4", "conversations": good["conversations"]},
        {"video": "broken.mp4", "conversations": good["conversations"]},
        {"conversations": [{"from": "human", "value": "<image>\nQ"}, {"from": "gpt", "value": "A"}]},
        {"image": "v0.mp4", "video": "v0.mp4", "conversations": good["conversations"]},
        {"video": "v0.mp4", "conversations": [{"from": "gpt", "value": "A"}, {"from": "human", "value": "Q"}]},
    ]
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 10)
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(r) for r in rows[:1]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n{oops\n"
    )
    samples, bad = load_dataset([jsonl], tmp_path)
    assert [s.line for s in samples] == [1]
    reasons = {b.line: b.reason for b in bad}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "conversations: Field required" in reasons[3]
    assert "2 <image> markers" in reasons[4]
    assert "turn 2 (answer) is empty" in reasons[5]
    assert "missing.mp4" in reasons[6] and "no such file" in reasons[6]
    assert "broken.mp4" in reasons[7]
    assert "<image> marker but no video or image" in reasons[8]
    assert "not both" in reasons[9]
    assert "must alternate" in reasons[10]
    assert "not valid JSON" in reasons[11]
    assert str(bad[0]) == f"{jsonl}:3: {reasons[3]}"
    with pytest.raises(DataError, match=rf"^{jsonl}:3: conversations"):
        load_dataset([jsonl], tmp_path, strict=True)


def test_json_list_rows_know_their_lines(tmp_path):
    path = tmp_path / "list.json"
    path.write_text('[\n  {"a": 1},\n\n  {"b": [1,\n 2]}, {"c": 3}\n]\n')
    assert read_rows(path) == [(2, {"a": 1}), (4, {"b": [1, 2]}), (5, {"c": 3})]
    (tmp_path / "broken.json").write_text('[\n {"a": 1},\n {"b": \n]')
    with pytest.raises(DataError, match=r"broken\.json:4: not valid JSON"):
        read_rows(tmp_path / "broken.json")


def test_marker_is_added_when_missing(tmp_path):
    make_dataset(tmp_path, rows=1, with_text_row=False)
    path = tmp_path / "r.jsonl"
    path.write_text(
        json.dumps(
            {"video": "v0.mp4", "conversations": [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A"}]}
        )
    )
    (s,), bad = load_dataset([path], tmp_path)
    assert not bad and s.turns[0][0] == "<image>\nQ?" and s.media == tmp_path / "v0.mp4"


def test_config_files_and_errors(tmp_path):
    good = tmp_path / "c.yaml"
    good.write_text(
        "stage: align\nmodel: {preset: tiny}\ndata: {train: [d/train.json], media_root: d}\n"
        "optim: {lr: {projector: 0.001}}\n"
    )
    cfg = load_train_config(good)
    assert cfg.trainable_modules() == ("projector",)
    assert cfg.data.train == [str(tmp_path / "d/train.json")] and cfg.data.media_root == str(tmp_path / "d")
    assert cfg.optim.lr_of("projector") == 0.001 and cfg.optim.lr_of("selector") == cfg.optim.default_lr
    toml = tmp_path / "c.toml"
    toml.write_text('stage = "sft"\ntrain_vision_tower = true\n[model]\npath = "ckpt"\n')
    cfg = load_train_config(toml)
    assert cfg.trainable_modules() == ("vision_tower", "compressor", "projector", "selector", "language_model")
    assert cfg.model.path == str(tmp_path / "ckpt")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stage: pretrain\nmodel: {preset: tiny}\noptim: {lr: {llm: 1}}\n")
    with pytest.raises(
        ValueError, match=r"training config .*bad\.yaml: stage: .*; optim\.lr: .*unknown modules \['llm'\]"
    ):
        load_train_config(bad)
    with pytest.raises(ValueError, match="exactly one of model.path"):
        TrainConfig.model_validate({"model": {}})
    with pytest.raises(ValueError, match="lora.enabled needs language_model"):
        TrainConfig.model_validate({"stage": "align", "model": {"preset": "tiny"}, "lora": {"enabled": True}})


def test_shipped_configs_load():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    configs = Path(__file__).resolve().parents[1] / "configs"
    stages = {p.name: load_train_config(p) for p in sorted(configs.glob("train_*.yaml"))}
    assert stages["train_align.yaml"].trainable_modules() == ("projector",)
    assert stages["train_sft_lora.yaml"].lora.enabled and stages["train_sft.yaml"].stage == "sft"
    kinds = {n: load_config_from_file(str(configs / "accelerate" / f"{n}.yaml")).distributed_type.value for n in
             ("ddp", "fsdp", "zero2", "zero3")}  # fmt: skip
    assert kinds == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}
