"""Expected peak memory of encoding a video and of answering a question, from the model's sizes.

Nothing is run: the estimate counts the tensors alive at each stage's peak.
Units below: F frames per compressor chunk, B frames per vision-tower batch,
N patches per frame, C vision width, I vision MLP width, g grid side, D LLM
width, G groups, P tokens per group, L LLM input length, b bytes per element.

Encode (streaming, :mod:`recot.model.encoder`):
  weights + token store (G P D b) + decode buffers (uint8 batch, pending
  normalised frames) + the largest of
  * vision tower: the features of the chunk so far (F N C b) and, inside one
    encoder layer, about 7 (B N C) tensors or 3 (B N C) + 2 (B N I) in the MLP;
    ``math`` attention adds the (B, heads, N, N) scores;
  * resize: features, their transposed copy, the float32 grid (F C g^2 4);
  * compressor: about 9 copies of the (F C g^2) activations (temporal block:
    input, sequence copy, q/k/v, scaled q/k, two einsum outputs); ``math``
    attention adds the (F, g^2, g^2) spatial attention maps;
  * projector: (F/4) g^2 (C + 3 D) b.

Answer (selector + prefill):
  weights + token store + time sequence (L_s D b) + selector working set
  (the window attention of one chunk of W windows, about 5 (W P D) tensors and
  a float32 copy; the scores; float32 rotary copies of the kept rows, ~3 L_k D 4)
  + LLM prefill: KV cache (2 layers L kv_dim b),
  one layer's activations (4 L D b, or 2 L D b + 3 L I_llm b in the MLP) and
  ``math`` attention scores (heads L^2 b), + the logits of the last position.

Device defaults: on CUDA, PyTorch's SDPA uses fused (flash / memory-efficient)
kernels that never hold the attention matrix; on CPU it uses its flash kernel
for float32 too. ``attention="math"`` counts the full matrices instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from recot.config import VideoXLProConfig
from recot.model.checkpoint import parse_dtype
from recot.model.groups import GroupPlan
from recot.model.selector import (
    QueryAwareSelector,
    VisualTokenLimit,
    context_budget,
    context_overflow,
    kept_time_tokens,
    num_kept,
)

Attention = Literal["fused", "math"]
_FLOAT32 = 4
# Text of a typical question with its chat template; enough for a planning estimate.
DEFAULT_PROMPT_TOKENS = 64
#: Tokens of one ``Time 0004.0s:`` text under the released model's Qwen2.5 tokenizer (it splits
#: digits), below 10,000 s. Used for the bare ``videoxl-pro-3b`` preset, whose tokenizer does not ship
#: with recot; a checkpoint's own tokenizer is measured instead (``VideoXLProProcessor.time_text_tokens``).
QWEN25_TIME_TEXT_TOKENS = 10


def qwen25_time_text_tokens(seconds: float = 0.0) -> int:
    """Tokens of the released ``Time {t:06.1f}s:`` text at ``seconds`` under Qwen2.5: one per digit plus the 5 of
    the rest, so 10 up to 9,999.9 s and 11 from 10,000 s (``Time 10000.0s:``)."""
    digits = sum(character.isdigit() for character in f"{seconds:06.1f}")
    return QWEN25_TIME_TEXT_TOKENS + digits - 5


@dataclass
class MemoryPlan:
    """Expected peak bytes of the two phases, with the terms that make them up.

    ``encode_peak`` is the sum of the encode terms. Answering has two stages that
    do not overlap: selection (``time_sequence`` + ``selector``) and prefill
    (``llm_inputs`` + ``kv_cache`` + ``llm_activations``); ``answer_peak`` is
    ``weights`` + ``token_store`` + the larger of the two. ``beyond_context``:
    tokens by which the LLM input and the answer run past the model's context
    (only with ``max_visual_tokens="all"``).
    """

    num_frames: int
    num_groups: int
    visual_tokens: int
    visual_tokens_kept: int
    llm_input_tokens: int
    dtype: str
    encode: dict[str, int] = field(default_factory=dict)
    answer: dict[str, int] = field(default_factory=dict)
    beyond_context: int = 0

    @property
    def encode_peak(self) -> int:
        return sum(self.encode.values())

    @property
    def answer_peak(self) -> int:
        a = self.answer
        selection = a["time_sequence"] + a["selector"]
        prefill = a["llm_inputs"] + a["kv_cache"] + a["llm_activations"]
        return a["weights"] + a["token_store"] + max(selection, prefill)

    @property
    def peak(self) -> int:
        return max(self.encode_peak, self.answer_peak)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: sizes, both phases' terms and peaks, in bytes."""
        return {
            "num_frames": self.num_frames,
            "num_groups": self.num_groups,
            "visual_tokens": self.visual_tokens,
            "visual_tokens_kept": self.visual_tokens_kept,
            "llm_input_tokens": self.llm_input_tokens,
            "beyond_context": self.beyond_context,
            "dtype": self.dtype,
            "encode": {**self.encode, "peak": self.encode_peak},
            "answer": {**self.answer, "peak": self.answer_peak},
            "peak": self.peak,
        }


def count_parameters(config: VideoXLProConfig) -> int:
    """Parameters of the model built from ``config`` (built on the meta device: no memory used)."""
    from recot.model.videoxl_pro import VideoXLPro

    with torch.device("meta"):
        model = VideoXLPro(config)
    # Tied embeddings are one tensor; parameters() already counts them once.
    return sum(p.numel() for p in model.parameters())


def plan_memory(
    config: VideoXLProConfig,
    num_frames: int,
    time_tokens_per_group: int,
    dtype: torch.dtype | str | None = None,
    keep_ratio: float | None = None,
    max_visual_tokens: VisualTokenLimit = None,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    max_new_tokens: int = 128,
    attention: Attention = "fused",
) -> MemoryPlan:
    """Estimate peak memory of encoding ``num_frames`` frames and of answering one question.

    ``time_tokens_per_group`` is the length of a ``Time ...s:`` text under the
    model's tokenizer (:meth:`recot.VideoXLProProcessor.time_text_tokens`). The
    visual budget and the kept tokens are those of answering
    (:func:`recot.model.selector.context_budget`, ``num_kept``);
    ``max_visual_tokens="all"`` plans the released operating point (no context cap).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if attention not in ("fused", "math"):
        raise ValueError(f"attention must be 'fused' or 'math', got {attention!r}")
    torch_dtype = parse_dtype(dtype)
    b = torch.empty(0, dtype=torch_dtype).element_size()
    c, d = config.vision_hidden_size, config.hidden_size
    n_patches = config.patches_per_side**2
    g2 = config.grid_size**2
    s = config.image_size
    fpg = config.frames_per_group
    groups = GroupPlan.for_config(num_frames, config).num_groups
    chunk_frames = min(config.compressor_batch_size, groups) * fpg
    vision_batch = min(config.vision_batch_size, chunk_frames)
    p = config.tokens_per_group
    visual = groups * p

    weights = count_parameters(config) * b
    store = visual * d * b

    # --- encode -------------------------------------------------------------
    decode = chunk_frames * s * s * 3 + 2 * chunk_frames * 3 * s * s * _FLOAT32  # uint8 batch + pending floats
    bnc = vision_batch * n_patches * c * b
    layer = max(7 * bnc, 3 * bnc + 2 * vision_batch * n_patches * config.vision_intermediate_size * b)
    if attention == "math":
        layer += vision_batch * config.vision_num_heads * n_patches**2 * b
    features = chunk_frames * n_patches * c * b
    vision = 2 * features + layer  # parts of the chunk, their concatenation, one layer
    resize = 2 * features + chunk_frames * c * g2 * (_FLOAT32 + b)
    x = chunk_frames * c * g2 * b
    compressor = 9 * x + (chunk_frames * g2 * g2 * _FLOAT32 if attention == "math" else 0)
    projector = chunk_frames // fpg * g2 * (c + 3 * d) * b
    encode = {
        "weights": weights,
        "token_store": store,
        "decode_buffers": decode,
        "activations": max(vision, resize, compressor, projector),
    }

    # --- answer -------------------------------------------------------------
    time_tokens = groups * time_tokens_per_group
    budget = context_budget(
        config, prompt_tokens, time_tokens, max_new_tokens, max_visual_tokens, longest_group_time=time_tokens_per_group
    )
    kept = num_kept(config, visual, config.keep_ratio if keep_ratio is None else keep_ratio, budget)
    seq_len = time_tokens + visual
    llm_len = prompt_tokens + kept_time_tokens(config, time_tokens, kept, time_tokens_per_group) + kept
    total_len = llm_len + max_new_tokens
    head_dim = d // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * total_len * config.num_key_value_heads * head_dim * b
    llm_layer = max(4 * llm_len * d * b, 2 * llm_len * d * b + 3 * llm_len * config.intermediate_size * b)
    if attention == "math":
        llm_layer += config.num_attention_heads * llm_len**2 * b
    chunk = min(groups, QueryAwareSelector.windows_per_chunk) * p * d
    selector = 5 * chunk * b + chunk * _FLOAT32 + 2 * visual * _FLOAT32 + 3 * (time_tokens + kept) * d * _FLOAT32
    answer = {
        "weights": weights,
        "token_store": store,
        "time_sequence": seq_len * d * b,
        "selector": selector,
        "llm_inputs": llm_len * d * b,
        "kv_cache": kv,
        "llm_activations": llm_layer + config.vocab_size * _FLOAT32,
    }
    overflow = context_overflow(config, llm_len, max_new_tokens)
    dtype_name = str(torch_dtype).replace("torch.", "")
    return MemoryPlan(num_frames, groups, visual, kept, llm_len, dtype_name, encode, answer, overflow)


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
