"""Checkpoints in the released layout: strict loading, round trips, errors by name."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model_helpers import random_frames, tiny_model, tiny_processor
from recot import CheckpointError, VideoXLPro, VideoXLProConfig
from recot.model.checkpoint import from_released_key, to_released_key
from recot.model.tokenizer import build_byte_tokenizer

# The 911 tensors of the released Video-XL-Pro-3B checkpoint (columns: key, shape, numel, note), kept in the repo.
REFERENCE = Path(__file__).parent / "data" / "official_checkpoint_keys.tsv"


def _outputs(model: VideoXLPro):
    proc = tiny_processor(model.config)
    inputs = proc("What is shown?", random_frames(6, seed=4), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    with torch.no_grad():
        return model(**inputs, keep_ratio=0.75).logits


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny_model(seed=11)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    model.save_pretrained(path, tokenizer=build_byte_tokenizer())
    return model, path


def test_preset_3b_has_exactly_the_released_keys_and_shapes():
    expected = {}
    for line in REFERENCE.read_text().splitlines()[1:]:
        key, shape, _, _ = line.split("\t")
        expected[key] = tuple(int(x) for x in shape.split(",")) if shape != "-" else ()
    with torch.device("meta"):
        model = VideoXLPro(VideoXLProConfig.from_preset("videoxl-pro-3b"))
    ours = {to_released_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected
    assert len(ours) == 911


def test_key_mapping_round_trips():
    model = tiny_model()
    for key in model.state_dict():
        assert from_released_key(to_released_key(key)) == key
    assert to_released_key("language_model.model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"
    assert to_released_key("compressor.encoder.1.qkv.weight") == "model.sae.encoder.1.qkv.weight"


def test_saved_files_use_released_names_without_tied_head(saved):
    model, path = saved
    tensors = load_file(str(path / "model.safetensors"))
    assert "model.sae.temporal_encoding" in tensors
    assert "model.WindowTimeToTokenAttention.v_proj.weight" in tensors
    assert "model.vision_tower.vision_tower.vision_model.post_layernorm.weight" in tensors
    assert "lm_head.weight" not in tensors  # tied to model.embed_tokens.weight
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llava_qwen"
    assert not list(path.parent.glob(".tiny.tmp-*"))


def test_round_trip_is_bit_exact(saved):
    model, path = saved
    loaded = VideoXLPro.from_pretrained(path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert loaded.language_model.lm_head.weight is loaded.language_model.get_input_embeddings().weight
    assert torch.equal(_outputs(model), _outputs(loaded))


def test_loads_with_explicit_lm_head_and_sharded(tmp_path, saved):
    model, path = saved
    tensors = load_file(str(path / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    out = tmp_path / "sharded"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    keys = sorted(tensors)
    half = len(keys) // 2
    weight_map = {}
    for name, part in (("a.safetensors", keys[:half]), ("b.safetensors", keys[half:])):
        save_file({k: tensors[k] for k in part}, str(out / name))
        weight_map.update(dict.fromkeys(part, name))
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    loaded = VideoXLPro.from_pretrained(out)
    assert torch.equal(_outputs(model), _outputs(loaded))


def test_save_pretrained_shards_and_replaces_atomically(tmp_path, saved):
    model, _ = saved
    path = tmp_path / "m"
    model.save_pretrained(path, max_shard_size=200_000)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model.save_pretrained(path)  # overwrite the sharded save with a single file
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    assert torch.equal(_outputs(model), _outputs(VideoXLPro.from_pretrained(path)))


def test_released_config_json_sizes_come_from_tensors(tmp_path, saved):
    """A config.json as released (flat LLM fields, no recot section) loads; the
    vision depth, width and compressor sizes are read off the tensors."""
    model, path = saved
    cfg = model.config
    released = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava_qwen",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_key_value_heads,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": True,
        "mm_hidden_size": cfg.vision_hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_spatial_pool_stride": 2,
    }
    out = tmp_path / "released"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(released))
    (out / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    loaded = VideoXLPro.from_pretrained(out)
    assert loaded.config.vision_num_layers == 2
    assert loaded.config.vision_intermediate_size == cfg.vision_intermediate_size
    assert loaded.config.image_size // loaded.config.patch_size == 7
    assert loaded.config.official_compat
    # The released defaults (24x24 grid, 144 tokens per group) apply where nothing says otherwise.
    assert loaded.config.tokens_per_group == 144


def _copy_with(tmp_path: Path, path: Path, edit) -> Path:
    out = tmp_path / "edited"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(out / "model.safetensors"))
    return out


def test_missing_key_is_named(tmp_path, saved):
    _, path = saved
    out = _copy_with(tmp_path, path, lambda t: t.pop("model.sae.encoder.4.qkv.bias"))
    with pytest.raises(CheckpointError, match=r"missing \(1\): model\.sae\.encoder\.4\.qkv\.bias"):
        VideoXLPro.from_pretrained(out)


def test_unexpected_and_wrong_shape_are_named(tmp_path, saved):
    _, path = saved

    def edit(t):
        t["model.extra_head.weight"] = torch.zeros(2)
        t["model.text_mlp.0.bias"] = torch.zeros(3)

    out = _copy_with(tmp_path, path, edit)
    with pytest.raises(CheckpointError) as info:
        VideoXLPro.from_pretrained(out)
    message = str(info.value)
    assert "unexpected (1): model.extra_head.weight" in message
    assert "model.text_mlp.0.bias: checkpoint (3,) vs model (64,)" in message


def test_truncated_file_raises_checkpoint_error(tmp_path, saved):
    _, path = saved
    out = tmp_path / "trunc"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    data = (path / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        VideoXLPro.from_pretrained(out)


def test_non_safetensors_and_missing_dirs(tmp_path, saved):
    _, path = saved
    out = tmp_path / "bin"
    out.mkdir()
    (out / "config.json").write_text((path / "config.json").read_text())
    (out / "pytorch_model.bin").write_bytes(b"\x80\x02not safetensors")
    with pytest.raises(CheckpointError, match=r"neither model.safetensors nor .*\(found: config.json, pytorch_model.bin\)"):
        VideoXLPro.from_pretrained(out)
    with pytest.raises(CheckpointError, match="does not exist"):
        VideoXLPro.from_pretrained(tmp_path / "nope")


def test_wrong_model_type_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="model_type='llama'"):
        VideoXLPro.from_pretrained(tmp_path)


@pytest.mark.parametrize("dtype", ["bf16", torch.float16])
def test_load_in_half_precision(saved, dtype):
    _, path = saved
    model = VideoXLPro.from_pretrained(path, dtype=dtype)
    expected = torch.bfloat16 if dtype == "bf16" else torch.float16
    assert model.dtype == expected
    assert model.vision_tower.siglip.embeddings.patch_embedding.weight.dtype == expected
    # Rotary frequencies stay float32 buffers.
    assert model.language_model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert _outputs(model).dtype == expected
