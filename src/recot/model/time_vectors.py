"""Absolute-time vectors: one fixed vector per second of video, shared by the timeline and the question.

Not in the released model (``VideoXLProConfig.time_vector``, off by default).
A small LLM trained from scratch does not learn to match a question's clock
("what is on screen at 01:34?") to the timestamp text of the group that covers
it: on the text-only probe (``scripts/probe_time_lookup.py``, 8-24 groups) it
stays near chance after 3,300 steps of 64 videos. With the same vector added to
both sides (each group's timestamp text and visual tokens at the group's middle
second, the question's clock at the asked second), the lookup is learned within
1,000 steps (README, "Where the time lookup fails").

Clock grounding (``VideoXLProConfig.clock_grounding``, also not released) goes one step further: each clock of
the prompt gets the mean visual token of the group that covers its time (:func:`covering_groups`), so the
question "what is on screen at 01:34?" carries what is on screen then, and no lookup is left to learn.

Shapes: ``times`` (...,) seconds (NaN: no time) -> vectors (..., D).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from recot.model.selector import TimeSequenceLayout

SHORTEST_PERIOD = 8.0  # seconds: two 4-second groups apart, the fastest component turns half a cycle
LONGEST_PERIOD = 7200.0  # seconds: two hours, the longest videos the default model is made for


def time_vectors(times: torch.Tensor, dim: int) -> torch.Tensor:
    """(..., dim) float32: sines and cosines of ``times`` at dim/2 periods from 8 s to 2 h (geometric); 0 where NaN.

    Euclidean length 1 (the sines and cosines of each period sum to 1 in square; divided by the square root of
    their count); an odd ``dim`` is zero-padded. :func:`add_time_vectors` scales them to the tokens they mark.
    """
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float64, device=times.device) / max(1, half - 1)
    periods = SHORTEST_PERIOD * (LONGEST_PERIOD / SHORTEST_PERIOD) ** steps
    angles = times.to(torch.float64).nan_to_num(0.0)[..., None] * (2 * math.pi / periods)
    vectors = torch.cat([angles.sin(), angles.cos()], dim=-1) / math.sqrt(max(1, half))
    vectors = torch.nn.functional.pad(vectors, (0, dim - 2 * half))
    return torch.where(times.isnan()[..., None], 0.0, vectors).float()


def add_time_vectors(embeddings: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """``embeddings`` (..., D) plus the time vectors of ``times`` (...,), each as long as its token (at least 1).

    A vector of fixed length would vanish on the visual tokens: the projector's outputs grow to a length of
    about 100 in training (the default model's, at hidden size 128), against about 0.7 for a text token's
    embedding. Scaled to the token's own length (detached: a statistic, not a path for gradients), the time
    is an equal part of every marked token after the LLM's RMSNorm; text tokens, shorter than 1, get length 1.
    Positions whose time is NaN are unchanged.
    """
    vectors = time_vectors(times.to(embeddings.device), embeddings.shape[-1]).to(embeddings.dtype)
    length = embeddings.detach().norm(dim=-1, keepdim=True).clamp(min=1.0)
    return embeddings + length * vectors


def group_middle_times(group_timestamps: torch.Tensor, frames_per_group: int) -> torch.Tensor:
    """(G,) float64: the middle of each group's frames, from the groups' first-frame times (G,).

    Frames are taken as evenly spaced within a group, the gap to the next group's first frame being one group:
    the middle is ``t + gap * (F - 1) / (2 F)`` (1.5 s into a 4-frame group at 1 fps); the last group uses the
    gap before it, and a lone group its own time.
    """
    times = group_timestamps.to(torch.float64)
    if len(times) < 2:
        return times.clone()
    gaps = times.diff()
    gaps = torch.cat([gaps, gaps[-1:]])
    return times + gaps * (frames_per_group - 1) / (2 * frames_per_group)


def window_times(layout: TimeSequenceLayout, group_timestamps: torch.Tensor, frames_per_group: int) -> torch.Tensor:
    """(L_s,) float64: each position of a time sequence at its group's middle second (:func:`group_middle_times`).

    One window of ``layout`` per group (:func:`recot.model.videoxl_pro.layout_from_ids`): a group's timestamp
    text and its visual tokens get the same time.
    """
    middles = group_middle_times(group_timestamps, frames_per_group).tolist()
    times = np.empty(layout.length, dtype=np.float64)  # NumPy: one torch op per window costs more than the work
    for (start, n_text, n_visual), middle in zip(layout.windows, middles, strict=True):
        times[start : start + n_text + n_visual] = middle
    return torch.from_numpy(times)


def covering_groups(group_timestamps: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions of ``times`` (L,) that hold a time (not NaN), and for each the group that covers it: the
    last of ``group_timestamps`` (G,) (the groups' first-frame times, ascending) that starts at or before it;
    the first group for a time before the video. Two (n,) int64 arrays: positions, group indices.

    NumPy in and out: the training path calls it per sample, where each small torch call would be one more
    dispatched operator; its callers turn the indices into tensors once.
    """
    positions = np.flatnonzero(~np.isnan(times))
    groups = np.maximum(np.searchsorted(group_timestamps, times[positions], side="right") - 1, 0)
    return positions, groups
