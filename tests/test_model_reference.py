"""recot's model against the literal implementation of docs/released-model.md in reference_videoxl.py."""

import pytest
import torch
import torch.nn.functional as F
from transformers import SiglipVisionModel

import reference_videoxl as ref
from model_helpers import random_frames, tiny_model, tiny_processor
from recot.model.checkpoint import to_released_key


@pytest.fixture(scope="module")
def case():
    # float64 throughout, so that any difference from the reference is a real one.
    model = tiny_model(seed=3).double()
    proc = tiny_processor(model.config)
    frames = random_frames(10, seed=1)
    times = [0.5 * i for i in range(10)]
    inputs = proc("What is happening in the video?", frames, times)
    with torch.no_grad():
        out = model(**inputs, keep_ratio=0.6, return_intermediates=True)
    sd = {to_released_key(k): v.detach() for k, v in model.state_dict().items()}
    return model, inputs, out, sd


def test_vision_features_are_pre_post_layernorm_hidden_states(case):
    model, inputs, out, sd = case
    prefix = "model.vision_tower.vision_tower.vision_model."
    siglip = SiglipVisionModel(model.config.vision_config()).double().eval()
    siglip.load_state_dict({k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)})
    order = [0, 1, 2, 2, 3, 4, 5, 6, 7, 7, 8, 9]  # 10 frames: 2 evenly spaced duplicates
    with torch.no_grad():
        hidden = siglip(inputs["pixel_values"][order].double(), output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(out.intermediates.encoder.vision_features, hidden, rtol=1e-10, atol=1e-10)
    assert out.intermediates.encoder.vision_features.shape == (12, 49, 64)


def test_compressor_pipeline_matches_reference(case):
    model, inputs, out, sd = case
    cfg = model.config
    resized = F.interpolate(
        out.intermediates.encoder.vision_features.transpose(1, 2).reshape(12, 64, 7, 7),
        size=(cfg.grid_size, cfg.grid_size),
        mode="bilinear",
        align_corners=False,
    )
    torch.testing.assert_close(out.intermediates.encoder.resized_features, resized)
    grouped = ref.group_official(resized)
    torch.testing.assert_close(out.intermediates.encoder.compressor_input, grouped)
    compressed = ref.compressor(grouped, sd, cfg.compressor_norm_groups, official=True)
    torch.testing.assert_close(out.intermediates.encoder.compressor_output, compressed, rtol=1e-9, atol=1e-9)
    w0, b0 = sd["model.mm_projector.0.weight"], sd["model.mm_projector.0.bias"]
    w2, b2 = sd["model.mm_projector.2.weight"], sd["model.mm_projector.2.bias"]
    projected = F.gelu(compressed @ w0.t() + b0) @ w2.t() + b2
    torch.testing.assert_close(out.intermediates.encoder.projector_output, projected, rtol=1e-9, atol=1e-9)
    pooled = ref.pool2x2(projected, cfg.grid_size)
    torch.testing.assert_close(out.intermediates.encoder.pooled_tokens, pooled, rtol=1e-9, atol=1e-9)


def test_selector_and_llm_inputs_match_reference(case):
    model, inputs, out, sd = case
    cfg = model.config
    expected = ref.selector_inputs(
        sd,
        out.intermediates.encoder.pooled_tokens,
        inputs["time_sequence_ids"].tolist(),
        inputs["input_ids"].tolist(),
        cfg.placeholder_token_id,
        cfg.image_token_index,
        keep_ratio=0.6,
        heads=cfg.selector_num_heads,
        multiple=cfg.selector_multiple,
    )
    torch.testing.assert_close(out.intermediates.inputs.selection.scores, expected["scores"], rtol=1e-9, atol=1e-9)
    assert out.intermediates.inputs.selection.kept_visual.tolist() == expected["kept"].tolist()
    assert len(expected["kept"]) == int(27 * 0.6)
    torch.testing.assert_close(out.intermediates.inputs.inputs_embeds[0], expected["inputs_embeds"], rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        logits = model.language_model(inputs_embeds=expected["inputs_embeds"][None]).logits
    torch.testing.assert_close(out.logits, logits, rtol=1e-9, atol=1e-9)


def test_clean_mode_differs_from_official_layout():
    official = tiny_model(seed=5)
    clean = tiny_model(seed=5, official_compat=False)
    clean.load_state_dict(official.state_dict())
    proc = tiny_processor(official.config)
    inputs = proc("Q?", random_frames(8, seed=2), [float(i) for i in range(8)])
    with torch.no_grad():
        a = official(**inputs, keep_ratio=1.0, return_intermediates=True).intermediates
        b = clean(**inputs, keep_ratio=1.0, return_intermediates=True).intermediates
    resized = a.encoder.resized_features
    # Clean layout: slot t of group g is frame 4g + t.
    torch.testing.assert_close(b.encoder.compressor_input[1, :, 2], resized[6])
    assert not torch.allclose(a.encoder.compressor_input, b.encoder.compressor_input)
