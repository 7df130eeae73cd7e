"""The query-aware selector: keep the visual tokens most relevant to the question.

The time sequence S interleaves, per group of frames, the tokens of its
timestamp text and its pooled visual tokens. Each visual token gets a relevance
score (time-aware window attention, then similarity to the prompt); S is
rotated by a fixed sinusoidal rotary embedding, the score is added to every
visual token, and the top-k visual tokens are kept in their original order
together with every time-text token (with ``config.drop_empty_group_times``,
only those of the groups that keep at least one visual token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from recot.config import VideoXLProConfig
from recot.model.numerics import upcast


@dataclass
class TimeSequenceLayout:
    """Where each group's time-text and visual tokens sit in the time sequence.

    ``windows[g] = (start, num_time_tokens, num_visual_tokens)``; the visual
    tokens of a group follow its time tokens. Derived from the actual token ids,
    so timestamps of any length work.
    """

    windows: list[tuple[int, int, int]]
    length: int

    @property
    def visual_mask(self) -> torch.Tensor:
        """Bool (length,) on the CPU, True at visual positions."""
        mask = np.zeros(self.length, dtype=bool)  # filled in NumPy: one torch op per window costs more than the work
        for start, n_time, n_visual in self.windows:
            mask[start + n_time : start + n_time + n_visual] = True
        return torch.from_numpy(mask)

    @property
    def window_index(self) -> torch.Tensor:
        """Int64 (length,) on the CPU: the window (group) each position belongs to (windows tile the sequence)."""
        sizes = [n_time + n_visual for _, n_time, n_visual in self.windows]
        return torch.from_numpy(np.repeat(np.arange(len(sizes)), sizes))


def visual_rotary(sequence: torch.Tensor, base: float, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of (L, D) by angle ``p * exp(2i * -ln(base) / D)``.

    ``p`` is each row's position, ``positions`` (L,) or by default 0..L-1; each
    row is rotated independently, so rotating a subset of rows at their
    original positions equals rotating all rows and then taking the subset.

    Angles in float32 with exactly this exp-based formula (a pow-based inverse
    frequency differs in the last bits); the rotation in at least float32, cast
    back to the input dtype.
    """
    length, dim = sequence.shape
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=sequence.device) * (-math.log(base) / dim))
    if positions is None:
        positions = torch.arange(length, device=sequence.device)
    angle = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angle.cos(), angle.sin()
    x = sequence.to(upcast(sequence.dtype))
    even, odd = x[:, 0::2], x[:, 1::2]
    rotated = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(1)
    return rotated.to(sequence.dtype)


class WindowTimeToTokenAttention(nn.Module):
    """Per-group attention from the visual tokens to the group's timestamp tokens.

    For each window: queries are the V visual tokens (V, D), keys and values the
    window's time tokens (n_t, D); multi-head with head width D / heads; the
    output (V, D) is used only for scoring. ``official_compat`` reproduces the
    released wiring: queries use ``k_proj``, keys and values both use ``q_proj``
    and ``v_proj`` is unused; otherwise queries use ``q_proj``, keys ``k_proj``
    and values ``v_proj``.
    """

    def __init__(self, hidden_size: int, num_heads: int, official_compat: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.official_compat = official_compat
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, sequence: torch.Tensor, windows: list[tuple[int, int, int]]) -> torch.Tensor:
        """(L, D) time sequence and some of its windows -> their attended visual tokens (sum V, D), in order."""
        if self.official_compat:
            query_proj, key_proj, value_proj = self.k_proj, self.q_proj, self.q_proj
        else:
            query_proj, key_proj, value_proj = self.q_proj, self.k_proj, self.v_proj
        head_dim = sequence.shape[-1] // self.num_heads
        # Windows with the same token counts are batched into one attention call.
        by_shape: dict[tuple[int, int], list[int]] = {}
        for g, (_, n_time, n_visual) in enumerate(windows):
            by_shape.setdefault((n_time, n_visual), []).append(g)
        results = []
        offsets = np.zeros(len(windows), dtype=np.int64)  # each window's first row in the concatenated results
        rows = 0
        for (n_time, n_visual), groups in by_shape.items():
            offsets[groups] = rows + n_visual * np.arange(len(groups))
            rows += n_visual * len(groups)
            starts = torch.tensor([windows[g][0] for g in groups], device=sequence.device)
            time_idx = starts[:, None] + torch.arange(n_time, device=sequence.device)
            vis_idx = starts[:, None] + n_time + torch.arange(n_visual, device=sequence.device)
            time_tokens, visual_tokens = sequence[time_idx], sequence[vis_idx]  # (W, n_t, D), (W, V, D)

            def heads(y: torch.Tensor) -> torch.Tensor:  # (W, n, D) -> (W, heads, n, head_dim)
                return y.unflatten(-1, (self.num_heads, head_dim)).transpose(1, 2)

            attn = torch.nn.functional.scaled_dot_product_attention(
                heads(query_proj(visual_tokens)), heads(key_proj(time_tokens)), heads(value_proj(time_tokens))
            )
            attended = self.out_proj(attn.transpose(1, 2).flatten(2))  # (W, V, D)
            results.append(attended.flatten(0, 1))
        out = torch.cat(results)
        if len(results) == 1:  # one shape: the windows are already in order
            return out
        # Rows back into window order: each window's rows, from its offset.
        sizes = np.array([n_visual for _, _, n_visual in windows])
        index = np.repeat(offsets - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
        return out[torch.from_numpy(index).to(out.device)]


def min_max_scores(raw: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``(raw - low) / (high - low)``, 0 where ``high == low`` (where the released code divides by zero).

    ``low`` and ``high`` are scalars or broadcast against ``raw`` (one video's, per row). torch.where rather
    than an if: comparing on the host would wait for the device.
    """
    span = high - low
    flat = span == 0
    return torch.where(flat, torch.zeros_like(raw), (raw - low) / torch.where(flat, torch.ones_like(span), span))


def evidence_groups(group_timestamps: torch.Tensor, spans: Sequence[tuple[float, float]]) -> torch.Tensor:
    """Bool (G,): True for each group whose stretch of the video overlaps one of ``spans`` ((start, end) seconds).

    Group g covers ``[t_g, t_{g+1})`` of ``group_timestamps`` (G,) (the groups' first-frame times, ascending),
    as a clock in the prompt does (:func:`recot.model.time_vectors.covering_groups`); the last group is as long as
    the one before it (one group: the whole video).
    """
    starts = torch.as_tensor(group_timestamps, dtype=torch.float64).cpu()
    if len(starts) == 0:
        return torch.zeros(0, dtype=torch.bool)
    last = starts[-1] + (starts[-1] - starts[-2]) if len(starts) > 1 else torch.tensor(math.inf, dtype=torch.float64)
    ends = torch.cat([starts[1:], last.reshape(1)])
    positive = torch.zeros(len(starts), dtype=torch.bool)
    for start, end in spans:
        positive |= (starts < end) & (ends > start)
    return positive


def evidence_loss(raw: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """How far the selector's ranking is from keeping the evidence: a scalar, at its least (the log of the number
    of evidence groups) when the evidence groups alone score high, all alike.

    ``raw`` (G * P,): the unnormalised scores of a video's G groups of P visual tokens
    (:meth:`QueryAwareSelector.raw_scores`); ``positive`` (G,) bool: its evidence groups
    (:func:`evidence_groups`, at least one). Each group scores the log-sum-exp of its tokens' (a soft
    maximum: a group is kept when any of its tokens is); the loss is the cross-entropy of the softmax over groups
    against the uniform distribution over the evidence groups, so every evidence group is pushed above the rest
    (all of a counted object's showings, not just one).
    """
    groups = len(positive)
    log_p = raw.float().view(groups, -1).logsumexp(1).log_softmax(0)
    return -log_p[positive.to(raw.device)].mean()


@dataclass
class Selection:
    """The selector's result for one time sequence of length L with V visual tokens."""

    sequence: torch.Tensor  # (L_kept, D): the kept time tokens and visual tokens, original order
    kept_positions: torch.Tensor  # (L_kept,) positions in the time sequence
    kept_visual: torch.Tensor  # (k,) indices among the V visual tokens, ascending
    scores: torch.Tensor  # (V,) min-max normalised scores, at least float32


def groups_seen(window_index: torch.Tensor, kept_visual_positions: torch.Tensor, text_positions: torch.Tensor) -> torch.Tensor:
    """Bool mask over ``text_positions``: True where the position's window keeps one of ``kept_visual_positions``.

    ``window_index`` (L,) maps each position of a time sequence (or of several, numbered on) to its window.
    """
    seen = torch.zeros(len(window_index), dtype=torch.bool, device=window_index.device)  # windows <= positions
    seen[window_index[kept_visual_positions]] = True
    return seen[window_index[text_positions]]


def num_kept(config: VideoXLProConfig, num_visual: int, keep_ratio: float, max_visual_tokens: int | None = None) -> int:
    """How many of ``num_visual`` visual tokens survive selection.

    ``int(num_visual * keep_ratio)``, capped by ``max_visual_tokens``, rounded
    down to a multiple of ``config.selector_multiple`` as released; but never
    zero for a non-empty video: where rounding would leave nothing (a still
    image, a video of one group), at least one token is kept, up to the cap.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    k = int(num_visual * keep_ratio)
    if max_visual_tokens is not None:
        if max_visual_tokens < 1:
            raise ValueError(f"max_visual_tokens must be >= 1, got {max_visual_tokens}")
        k = min(k, max_visual_tokens)
    multiple = config.selector_multiple
    rounded = k // multiple * multiple
    return rounded if rounded or not num_visual else max(k, 1)


#: ``max_visual_tokens`` value that keeps ``keep_ratio`` of every visual token, past the LLM's context if need be.
ALL_VISUAL_TOKENS = "all"
VisualTokenLimit = int | Literal["all"] | None


def parse_visual_token_limit(text: str) -> int | str:
    """A ``max_visual_tokens`` written as text (a CLI flag, a plugin argument): an integer >= 1, or ``"all"``.

    Raises ``ValueError("expected an integer >= 1 or 'all', got ...")``.
    """
    value = str(text).strip().lower()
    if value == ALL_VISUAL_TOKENS:
        return ALL_VISUAL_TOKENS
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"expected an integer >= 1 or 'all', got {text!r}")
    return number


def context_budget(
    config: VideoXLProConfig,
    prompt_tokens: int,
    time_tokens: int,
    max_new_tokens: int,
    max_visual_tokens: VisualTokenLimit = None,
    *,
    longest_group_time: int | None = None,
) -> int | None:
    """Most visual tokens the LLM may see: ``max_visual_tokens``, capped by what fits its context.

    ``max_visual_tokens=None`` takes the model's default (``config.max_visual_tokens``), and where that is
    None too, whatever fits. The context (``max_position_embeddings``) must hold the prompt, the timestamp
    text of the groups (``time_tokens`` for all of them), the kept visual tokens and the answer. With
    ``config.drop_empty_group_times`` only the groups of kept tokens keep their text, so k kept tokens bring
    at most ``k * longest_group_time`` of it (without ``longest_group_time``, all of it is counted).
    Raises ``ValueError`` when not even one visual token fits (too many frames for this model).
    ``max_visual_tokens="all"`` returns None: no cap at all, the released model's operating point
    (``keep_ratio`` of every visual token, past the context the LLM was trained on; see
    :func:`context_overflow`).
    """
    if max_visual_tokens == ALL_VISUAL_TOKENS:
        return None
    if isinstance(max_visual_tokens, str):
        raise ValueError(f"max_visual_tokens must be a positive number or 'all', got {max_visual_tokens!r}")
    available = config.max_position_embeddings - prompt_tokens - max_new_tokens
    room = available - time_tokens
    dropping = config.drop_empty_group_times and longest_group_time is not None
    if dropping:
        room = max(room, available // (1 + longest_group_time))
    if room < 1:
        if dropping:
            raise ValueError(
                f"the prompt ({prompt_tokens} tokens) and {max_new_tokens} new tokens leave no room for one visual "
                f"token and its timestamp in the model's context of {config.max_position_embeddings}; ask a shorter "
                "question or fewer new tokens"
            )
        raise ValueError(
            f"the prompt ({prompt_tokens} tokens), the timestamps of the groups ({time_tokens} tokens) and "
            f"{max_new_tokens} new tokens leave no room for visual tokens in the model's context of "
            f"{config.max_position_embeddings}; sample fewer frames"
        )
    if max_visual_tokens is None:
        max_visual_tokens = config.max_visual_tokens
        if max_visual_tokens is None:
            return room
    if max_visual_tokens < 1:
        raise ValueError(f"max_visual_tokens must be >= 1, got {max_visual_tokens}")
    return min(max_visual_tokens, room)


def kept_time_tokens(config: VideoXLProConfig, time_tokens: int, kept: int, longest_group_time: int | None) -> int:
    """Most timestamp-text tokens that stay beside ``kept`` visual tokens (all of them, unless
    ``config.drop_empty_group_times`` drops those of groups with no kept token and ``longest_group_time`` is known)."""
    if config.drop_empty_group_times and longest_group_time is not None:
        return min(time_tokens, kept * longest_group_time)
    return time_tokens


def context_overflow(config: VideoXLProConfig, llm_input_tokens: int, max_new_tokens: int) -> int:
    """Tokens by which the LLM input plus the answer run past the context (``max_position_embeddings``); 0 if none."""
    return max(0, llm_input_tokens + max_new_tokens - config.max_position_embeddings)


class QueryAwareSelector(nn.Module):
    """Score visual tokens against the prompt and keep the best ones.

    Inputs: time sequence S (L, D) with its layout, and the embedded prompt
    tokens (n_text, D). Output: a :class:`Selection`. The number kept is
    :func:`num_kept`: ``int(V * keep_ratio)``, capped by ``max_visual_tokens``,
    rounded down to a multiple of ``config.selector_multiple`` (16 for the
    released model).
    """

    #: Windows attended at once when scoring: bounds memory for long videos.
    windows_per_chunk = 256

    def __init__(self, config: VideoXLProConfig) -> None:
        super().__init__()
        self.config = config
        self.rotary_base = config.rope_theta
        self.text_mlp = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.GELU())
        self.window_attention = WindowTimeToTokenAttention(
            config.hidden_size, config.selector_num_heads, config.official_compat
        )

    def raw_scores(self, sequence: torch.Tensor, layout: TimeSequenceLayout, text_embeds: torch.Tensor) -> torch.Tensor:
        """(V,) unnormalised relevance of each visual token (at least float32): <W_i, mean_j Q_j>.

        W_i is the token's window attention output, Q_j the prompt tokens through ``text_mlp``.
        The mean over prompt tokens of <W_i, Q_j> is taken as <W_i, mean_j Q_j>,
        and the windows are attended a chunk at a time, so that memory stays
        bounded for hundreds of thousands of visual tokens.
        """
        wide = upcast(sequence.dtype)
        query = self.text_mlp(text_embeds).to(wide).mean(dim=0)  # (D,)
        raw = torch.cat([
            self.window_attention(sequence, layout.windows[i : i + self.windows_per_chunk]).to(wide) @ query
            for i in range(0, len(layout.windows), self.windows_per_chunk)
        ])
        return raw

    def score(self, sequence: torch.Tensor, layout: TimeSequenceLayout, text_embeds: torch.Tensor) -> torch.Tensor:
        """(V,) relevance of each visual token (at least float32), :meth:`raw_scores` min-max normalised to [0, 1].

        All-equal scores (where the released code divides by zero) become 0.
        """
        raw = self.raw_scores(sequence, layout, text_embeds)
        return min_max_scores(raw, raw.min(), raw.max())

    def forward(
        self,
        sequence: torch.Tensor,
        layout: TimeSequenceLayout,
        text_embeds: torch.Tensor,
        keep_ratio: float,
        max_visual_tokens: int | None = None,
    ) -> Selection:
        scores = self.score(sequence, layout, text_embeds)
        # Positions come from the layout on the CPU, so that nothing is read back from the device here (but for
        # drop_empty_group_times, whose kept time texts depend on the scores).
        mask = layout.visual_mask
        visual_positions = mask.nonzero().squeeze(1).to(sequence.device)
        text_positions = (~mask).nonzero().squeeze(1).to(sequence.device)
        k = num_kept(self.config, len(visual_positions), keep_ratio, max_visual_tokens)
        kept_visual = scores.topk(k).indices.sort().values
        if self.config.drop_empty_group_times:
            window_index = layout.window_index.to(sequence.device)
            text_positions = text_positions[groups_seen(window_index, visual_positions[kept_visual], text_positions)]
        kept_positions = torch.cat([text_positions, visual_positions[kept_visual]]).sort().values
        # Rotate (at the original positions), then add each kept visual token's score (0 to the time tokens).
        kept = visual_rotary(sequence[kept_positions], self.rotary_base, kept_positions)
        position_scores = scores.new_zeros(layout.length).index_copy(0, visual_positions, scores)
        kept = kept + position_scores[kept_positions].to(kept.dtype)[:, None]
        return Selection(kept, kept_positions, kept_visual, scores)
