"""The training forward pass: frames -> tokens (in chunks, checkpointed) -> selection -> LLM -> summed loss.

Shapes for one sample with N frames (G groups, P tokens per group, D LLM width):

    frames uint8 (N, S, S, 3) -> group order (4G frames) -> chunks of ``compressor_batch_size`` groups:
        [frozen part, no graph] vision tower -> resize -> group            (g, C, 4, h, h)
        [trained part, checkpointed] compressor -> projector -> 2x2 pool    (g, P, D)
    -> EncodedVideo (G, P, D) -> :func:`embed_micro_batch` (``VideoXLPro.embed_inputs`` with labels, for the
       whole micro-batch at once): the selector scores only tokens whose label is -100 (prompt, never
       answers), keep ratio drawn per sample
    -> inputs_embeds (B, L, D), labels (B, L), right-padded
    -> Qwen2 decoder -> hidden (B, L, D) -> lm_head at labelled positions only -> cross-entropy, summed
    (and, logged beside the loss, how alike each video's tokens are: :func:`visual_similarity`)

With cached vision features (G_i, C, 4, g, g) instead of frames, the groups of all the micro-batch's videos go
through the compressor and head together (:func:`encode_grouped`), ``encode_chunk_groups`` at a time.

The part of the encoder that learns runs under activation checkpointing, one
chunk at a time, so its stored activations are one chunk's, whatever the
video's length; the frozen part runs without a graph. The loss is a sum over
answer tokens (with the token count) so that the trainer can normalise over the
whole global batch, which makes N processes equal one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from torch.utils.checkpoint import checkpoint

from recot.model.encoder import EncodedVideo
from recot.model.frames import normalize_frames
from recot.model.groups import GroupPlan
from recot.model.numerics import upcast
from recot.model.selector import (
    TimeSequenceLayout,
    evidence_groups,
    evidence_loss,
    groups_seen,
    min_max_scores,
    num_kept,
    visual_rotary,
)
from recot.model.time_vectors import add_time_vectors, covering_groups, window_times
from recot.model.videoxl_pro import VideoXLPro, as_1d, layout_from_ids
from recot.model.vision import resize_to_grid
from recot.train.data import IGNORE_INDEX


@dataclass
class ModelInput:
    """One tokenised sample with its video: what :class:`TrainingForward` consumes.

    The video is ``frames`` (uint8 (N, S, S, 3)) with their ``timestamps`` (N,), or, when
    the vision tower is frozen and its output cached, ``grouped`` (G, C, 4, g, g) vision
    features with ``timestamps`` (G,) of the groups. Neither: a text-only sample.
    """

    input_ids: torch.Tensor  # (L,)
    labels: torch.Tensor  # (L,)
    frames: torch.Tensor | None
    timestamps: torch.Tensor | None
    time_sequence_ids: torch.Tensor | None  # (L_s,)
    keep_ratio: float
    grouped: torch.Tensor | None = None
    input_times: torch.Tensor | None = None  # (L,) the prompt's clock times, for time_vector models
    evidence: tuple[tuple[float, float], ...] = ()  # (start, end) seconds the answers are read from, on ``timestamps``


def _requires_grad(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def vision_features(model: VideoXLPro, frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (N, S, S, 3) -> grouped vision features (G, C, 4, g, g), without a graph (the tower is frozen).

    Frames are put in group order and run a compressor chunk at a time (:class:`~recot.model.groups.GroupPlan`).
    """
    plan = GroupPlan.for_config(frames.shape[0], model.config)
    with torch.no_grad():
        return torch.cat([_vision(model, frames[idx]) for idx in plan.chunks])


def _vision(model: VideoXLPro, frames_uint8: torch.Tensor) -> torch.Tensor:
    config = model.config
    pixels = normalize_frames(frames_uint8.to(model.device), config.image_mean, config.image_std, model.dtype)
    return model.group_features(resize_to_grid(model.vision_tower(pixels), config.grid_size))


def _encoder_stages(model: VideoXLPro):
    """The compressor and head stages of the encoder, and which of them learn (vision tower, compressor, head)."""
    train_vision = _requires_grad(model.vision_tower)
    train_compressor = train_vision or _requires_grad(model.compressor)
    train_head = train_compressor or _requires_grad(model.projector)

    def compress(x: torch.Tensor) -> torch.Tensor:
        return model.compressor(x)[:, :, 0].flatten(2).transpose(1, 2)  # (g, h*h, C)

    def head(compressed: torch.Tensor) -> torch.Tensor:
        return model.pool(model.projector(compressed))

    return compress, head, (train_vision, train_compressor, train_head)


def _run_chunks(stages: list, trained: list[bool], chunks: list[torch.Tensor], checkpointing: bool) -> torch.Tensor:
    """Each chunk through the stages: the frozen prefix without a graph, the rest, from the first trained stage on,
    with one (under activation checkpointing per chunk when asked); the chunks' outputs concatenated."""
    first = trained.index(True) if any(trained) else len(stages)
    rest = stages[first:]

    def run(y: torch.Tensor) -> torch.Tensor:
        for stage in rest:
            y = stage(y)
        return y

    parts = []
    for x in chunks:
        with torch.no_grad():
            for stage in stages[:first]:
                x = stage(x)
        if rest:
            x = checkpoint(run, x, use_reentrant=False) if checkpointing else run(x)
        parts.append(x)
    return torch.cat(parts)


def encode_frames(
    model: VideoXLPro, frames: torch.Tensor, timestamps: torch.Tensor, checkpointing: bool
) -> EncodedVideo:
    """uint8 frames (N, S, S, 3) with ``timestamps`` (N,) -> :class:`EncodedVideo`, with a graph where parameters
    learn: the same result as :meth:`VideoXLPro.encode_video`; only the trained stages keep a graph, under
    activation checkpointing per chunk of ``compressor_batch_size`` groups when ``checkpointing`` is on.
    """
    compress, head, (train_vision, train_compressor, train_head) = _encoder_stages(model)
    plan = GroupPlan.for_config(frames.shape[0], model.config)
    stages = [lambda x: _vision(model, x), compress, head]
    tokens = _run_chunks(
        stages, [train_vision, train_compressor, train_head], [frames[i] for i in plan.chunks], checkpointing
    )
    return EncodedVideo(tokens, plan.group_timestamps(timestamps))


def encode_grouped(
    model: VideoXLPro, grouped: list[torch.Tensor], checkpointing: bool, chunk_groups: int | None = None
) -> list[torch.Tensor]:
    """Cached vision features of several videos, [(G_i, C, 4, g, g)] -> their tokens [(G_i, P, D)].

    The videos' groups go through the compressor and head together, ``chunk_groups`` at a time (default: the
    model's ``compressor_batch_size``): a micro-batch of 64 short videos is then a few passes instead of 64,
    which on a GPU is what a training step's time goes to (each pass is hundreds of small kernels). Each group is
    compressed on its own, so the tokens do not depend on the chunking.
    """
    compress, head, (train_vision, train_compressor, train_head) = _encoder_stages(model)
    if train_vision:
        raise ValueError("cached vision features cannot train the vision tower")
    # The cache is read on the CPU; the compressor runs where the model is.
    everything = torch.cat(grouped).to(model.device)
    chunks = list(everything.split(chunk_groups or model.config.compressor_batch_size))
    tokens = _run_chunks([compress, head], [train_compressor, train_head], chunks, checkpointing)
    return list(tokens.split([len(g) for g in grouped]))


@dataclass
class ForwardOutput:
    """What :class:`TrainingForward` returns for a micro-batch: sums, so that the trainer normalises over the
    whole global batch."""

    loss_sum: torch.Tensor  # summed cross-entropy of the answer tokens
    answer_tokens: torch.Tensor
    llm_tokens: int  # LLM input positions
    similarity_sum: float  # :func:`visual_similarity` summed over the samples with a video
    videos: int
    selector_loss_sum: torch.Tensor | None = None  # :func:`evidence_loss` summed over the samples with evidence
    evidence_samples: int = 0


class TrainingForward(nn.Module):
    """``forward(samples)`` -> :class:`ForwardOutput` for a micro-batch.

    ``module`` is the model or its peft wrapper (kept as a submodule so that
    DDP/FSDP/DeepSpeed wrap every parameter); ``model`` is the :class:`VideoXLPro` inside it.
    """

    def __init__(
        self,
        module: nn.Module,
        model: VideoXLPro,
        encoder_checkpointing: bool,
        max_visual_tokens: int | None,
        encode_chunk_groups: int | None = None,
        selector_loss: bool = False,
    ) -> None:
        super().__init__()
        self.module = module
        self._model = [model]  # a list: not registered twice
        self.encoder_checkpointing = encoder_checkpointing
        self.max_visual_tokens = max_visual_tokens
        self.encode_chunk_groups = encode_chunk_groups
        self.selector_loss = selector_loss  # also compute evidence_loss for the samples with evidence

    @property
    def model(self) -> VideoXLPro:
        return self._model[0]

    def encode(self, samples: list[ModelInput]) -> list[EncodedVideo | None]:
        """Each sample's video as an :class:`EncodedVideo` (None for a text-only sample): the cached features of
        all samples through the compressor together (:func:`encode_grouped`), frames one video at a time."""
        model = self.model
        encoded: list[EncodedVideo | None] = [None] * len(samples)
        cached = [i for i, s in enumerate(samples) if s.grouped is not None]
        if cached:
            grouped = [samples[i].grouped for i in cached]
            tokens = encode_grouped(model, grouped, self.encoder_checkpointing, self.encode_chunk_groups)
            for i, t in zip(cached, tokens, strict=True):
                encoded[i] = EncodedVideo(t, samples[i].timestamps.to(torch.float64))
        for i, s in enumerate(samples):
            if s.grouped is None and s.frames is not None:
                encoded[i] = encode_frames(model, s.frames, s.timestamps, self.encoder_checkpointing)
        return encoded

    def forward(self, samples: list[ModelInput]) -> ForwardOutput:
        encoded = self.encode(samples)
        videos = [e.tokens for e in encoded if e is not None]
        similarity = float(visual_similarities(videos).sum()) if videos else 0.0
        inputs, labels, lengths, raw_scores = embed_micro_batch(self.model, samples, encoded, self.max_visual_tokens)
        selector_loss, evidence_samples = None, 0
        if self.selector_loss:
            losses = []
            for sample, video, raw in zip(samples, encoded, raw_scores, strict=True):
                if video is None or not sample.evidence:
                    continue
                positive = evidence_groups(video.timestamps, sample.evidence)
                if positive.any():  # evidence outside the sampled frames teaches nothing
                    losses.append(evidence_loss(raw, positive))
            if losses:
                selector_loss, evidence_samples = torch.stack(losses).sum(), len(losses)
        attention = None
        if min(lengths) < max(lengths):  # from the lengths: no mask has to be read back from the device
            attention = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long().to(inputs.device)
        lm = self.model.language_model
        hidden = lm.model(inputs_embeds=inputs, attention_mask=attention, use_cache=False).last_hidden_state
        # Position t predicts token t+1; the vocabulary projection only where there is a label.
        targets = labels[:, 1:]
        picked = targets != IGNORE_INDEX
        logits = lm.lm_head(hidden[:, :-1][picked]).float()
        loss_sum = F.cross_entropy(logits, targets[picked], reduction="sum")
        return ForwardOutput(loss_sum, picked.sum(), sum(lengths), similarity, len(videos), selector_loss, evidence_samples)


@torch.no_grad()
def visual_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity of a video's visual tokens (G, P, D) to their mean token: a scalar in [-1, 1].

    A collapse detector. Near 1, every token is nearly the same vector: after the
    LLM's RMSNorm they all look alike and carry no information about the video,
    so the model answers from the question alone. Seen when the compressor was
    fine-tuned along with an LLM trained from scratch: its output grew 20x along
    one direction and this rose from 0.80 to 0.9999 (``docs/training.md``).
    """
    flat = tokens.detach().float().reshape(-1, tokens.shape[-1])
    return F.cosine_similarity(flat, flat.mean(0, keepdim=True)).mean()


@torch.no_grad()
def visual_similarities(videos: list[torch.Tensor]) -> torch.Tensor:
    """:func:`visual_similarity` of several videos' tokens [(G_i, P, D)] -> (n,), computed together."""
    flat = torch.cat([v.detach().float().reshape(-1, v.shape[-1]) for v in videos])
    counts = torch.tensor([v.shape[0] * v.shape[1] for v in videos], device=flat.device)
    video = torch.repeat_interleave(torch.arange(len(videos), device=flat.device), counts)
    means = flat.new_zeros(len(videos), flat.shape[1]).index_add_(0, video, flat) / counts[:, None]
    cosines = F.cosine_similarity(flat, means[video])
    return cosines.new_zeros(len(videos)).index_add_(0, video, cosines) / counts


class MicroBatchEmbeds(NamedTuple):
    """:func:`embed_micro_batch`'s result."""

    inputs: torch.Tensor  # (B, L, D) right-padded with zeros
    labels: torch.Tensor  # (B, L) padded with -100
    lengths: list[int]  # each sample's length
    raw_scores: list[torch.Tensor | None]  # per sample, the selector's raw scores (V_i,) of its video (None: none)


def embed_micro_batch(
    model: VideoXLPro,
    samples: list[ModelInput],
    encoded: list[EncodedVideo | None],
    max_visual_tokens: int | None = None,
) -> MicroBatchEmbeds:
    """:meth:`VideoXLPro.embed_inputs` for a whole micro-batch at once: inputs_embeds (B, L, D) right-padded with
    zeros, labels (B, L) padded with -100, each sample's length, and the selector's raw scores of each video
    (:meth:`~recot.model.selector.QueryAwareSelector.raw_scores`, with a graph: what ``evidence_loss`` trains).

    The same computation as calling ``embed_inputs`` per sample (tested to 1e-5), rearranged so that the operator
    calls do not grow with the number of samples: one embedding lookup for every prompt and time-sequence id,
    one placement of every video's tokens, one time-vector addition, the selector's window attention over the
    windows of every video, per-video min-max scores by scatter, the top-k of every video from one sort (ties
    may be broken differently from ``topk``), one rotary, one gather into the padded batch. Every index is
    computed on the CPU, so nothing is read back from the device, except, with ``drop_empty_group_times``, the
    number of time texts each video keeps (one read a micro-batch). Training only: inference keeps the
    per-sample path whose numbers match the released model.
    """
    config, selector = model.config, model.selector
    device = model.device
    token_embed = model.language_model.get_input_embeddings()
    image = config.image_token_index

    # ----- bookkeeping on the CPU: where each sample's rows sit -------------------------------------------
    prompt_ids, prompt_times, query_rows, grounded_rows, grounding_groups = [], [], [], [], []
    seq_ids, seq_times, visual_rows, text_seq_rows, windows, video_tokens = [], [], [], [], [], []
    per_sample = []  # (prompt start, prompt length, image position or None, video index or None)
    video_counts, kept_counts, seq_starts, visual_starts = [], [], [], []
    prompt_offset = seq_offset = visual_offset = group_offset = 0
    for sample, video in zip(samples, encoded, strict=True):
        ids, labels = as_1d(sample.input_ids).cpu(), as_1d(sample.labels).cpu()
        marks = (ids == image).nonzero().flatten().tolist()
        if len(marks) != (0 if video is None else 1):
            raise ValueError(f"a sample has {len(marks)} image tokens and {'a' if video is not None else 'no'} video")
        times = torch.full(ids.shape, float("nan"), dtype=torch.float64)
        if config.uses_clock_times and sample.input_times is not None:
            times = as_1d(sample.input_times).cpu().to(torch.float64).masked_fill(labels != IGNORE_INDEX, float("nan"))
        prompt_ids.append(ids.masked_fill(ids == image, 0))
        prompt_times.append(times)
        position = marks[0] if marks else None
        if video is not None:
            text = (ids != image) & (labels == IGNORE_INDEX)
            query_rows.append(prompt_offset + text.nonzero().flatten())
            time_ids = as_1d(sample.time_sequence_ids).cpu()
            layout = layout_from_ids(time_ids, config.placeholder_token_id)
            g, p, _ = video.tokens.shape
            if [n for _, _, n in layout.windows] != [p] * g:
                raise ValueError(f"a time sequence has {len(layout.windows)} windows; its video has {g} groups of {p}")
            mask = layout.visual_mask
            seq_ids.append(time_ids.masked_fill(mask, 0))
            group_times = video.timestamps.cpu()
            seq_times.append(
                window_times(layout, group_times, config.frames_per_group)
                if config.time_vector
                else torch.full((layout.length,), float("nan"), dtype=torch.float64)
            )
            visual_rows.append(seq_offset + mask.nonzero().flatten())
            text_seq_rows.append(seq_offset + (~mask).nonzero().flatten())
            windows += [(seq_offset + start, n_time, n_visual) for start, n_time, n_visual in layout.windows]
            video_tokens.append(video.tokens.reshape(g * p, -1))
            if config.clock_grounding:
                positions, groups = covering_groups(group_times.numpy(), times.numpy())
                grounded_rows.append(prompt_offset + positions)
                grounding_groups.append(group_offset + groups)
            keep = num_kept(config, g * p, sample.keep_ratio, max_visual_tokens)
            video_counts.append(g * p)
            kept_counts.append(layout.length - g * p + keep)
            seq_starts.append(seq_offset)
            visual_starts.append((visual_offset, keep))
            per_sample.append((prompt_offset, len(ids), position, len(video_counts) - 1))
            seq_offset += layout.length
            visual_offset += g * p
            group_offset += g
        else:
            per_sample.append((prompt_offset, len(ids), None, None))
        prompt_offset += len(ids)

    # ----- the prompts: one lookup, their clocks' grounding and time vectors ------------------------------
    all_ids = torch.cat(prompt_ids + seq_ids).to(device)
    embedded = token_embed(all_ids)
    prompts = embedded[:prompt_offset]
    visual_tokens = torch.cat(video_tokens).to(embedded.dtype) if video_tokens else None
    if grounded_rows:
        # each prompt clock + the mean token of the group covering its time (as embed_inputs does)
        means = visual_tokens.view(group_offset, config.tokens_per_group, -1).mean(1)
        groups = torch.from_numpy(np.concatenate(grounding_groups)).to(device)
        clock_rows = torch.from_numpy(np.concatenate(grounded_rows)).to(device)
        prompts = prompts.index_add(0, clock_rows, means[groups])
    if config.time_vector:
        prompts = add_time_vectors(prompts, torch.cat(prompt_times))
    rows = [prompts]
    if video_counts:
        # ----- the time sequences: visual tokens placed, time vectors added -----------------------------
        visual = torch.cat(visual_rows).to(device)
        sequence = embedded[prompt_offset:].index_put((visual,), visual_tokens)
        if config.time_vector:
            sequence = add_time_vectors(sequence, torch.cat(seq_times))
        # ----- the selector: each video's query, its window attention, its scores min-max normalised -----
        wide = upcast(sequence.dtype)
        query_counts = torch.tensor([len(q) for q in query_rows])
        video_of_query = torch.repeat_interleave(torch.arange(len(query_rows)), query_counts).to(device)
        queries = selector.text_mlp(embedded[torch.cat(query_rows).to(device)]).to(wide)
        queries = queries.new_zeros(len(query_rows), queries.shape[1]).index_add_(0, video_of_query, queries)
        queries = queries / query_counts.to(device, wide)[:, None]
        step = selector.windows_per_chunk
        attended = torch.cat(
            [selector.window_attention(sequence, windows[i : i + step]) for i in range(0, len(windows), step)]
        )
        video_of_visual = torch.repeat_interleave(torch.arange(len(video_counts)), torch.tensor(video_counts)).to(
            device
        )
        raw = (attended.to(wide) * queries[video_of_visual]).sum(-1)
        low = raw.new_full((len(video_counts),), float("inf")).scatter_reduce(0, video_of_visual, raw, "amin")
        high = raw.new_full((len(video_counts),), float("-inf")).scatter_reduce(0, video_of_visual, raw, "amax")
        scores = min_max_scores(raw, low[video_of_visual], high[video_of_visual])
        # ----- each video's best tokens: one sort by (video, score descending); the first k of each video ---
        order = torch.argsort(video_of_visual.to(torch.float64) * 2 + (1 - scores.to(torch.float64)), stable=True)
        chosen = order[torch.cat([torch.arange(start, start + keep) for start, keep in visual_starts]).to(device)]
        text_rows = torch.cat(text_seq_rows).to(device)
        if config.drop_empty_group_times:
            # only the groups that keep a visual token keep their timestamp text (as the selector does); the
            # number kept now depends on the scores, so it is read back once for the whole micro-batch
            window_index = TimeSequenceLayout(windows, seq_offset).window_index.to(device)  # all videos' windows
            seen = groups_seen(window_index, visual[chosen], text_rows)
            text_rows = text_rows[seen]
            video_of_text = torch.repeat_interleave(torch.tensor([len(rows) for rows in text_seq_rows]))
            texts_kept = torch.bincount(video_of_text[seen.cpu()], minlength=len(video_counts)).tolist()
            kept_counts = [texts + keep for texts, (_, keep) in zip(texts_kept, visual_starts, strict=True)]
        kept = torch.cat([text_rows, visual[chosen]]).sort().values
        # ----- rotary at each row's position within its own sequence, then each kept visual token's score --
        offsets = torch.repeat_interleave(torch.tensor(seq_starts), torch.tensor(kept_counts)).to(device)
        selected = visual_rotary(sequence[kept], selector.rotary_base, kept - offsets)
        position_scores = scores.new_zeros(len(sequence)).index_copy(0, visual, scores)
        rows.append(selected + position_scores[kept].to(selected.dtype)[:, None])
    rows.append(prompts.new_zeros(1, prompts.shape[1]))
    table = torch.cat(rows)
    padding = len(table) - 1

    # ----- one gather into the padded batch; the labels built on the CPU ---------------------------------
    kept_starts = [prompt_offset + s for s in np.cumsum([0] + kept_counts[:-1]).tolist()] if kept_counts else []
    index, labels = [], []
    for sample, (start, length, position, video) in zip(samples, per_sample, strict=True):
        sample_labels = as_1d(sample.labels).cpu()
        if position is None:
            index.append(torch.arange(start, start + length))
            labels.append(sample_labels)
            continue
        n = kept_counts[video]
        index.append(torch.cat([torch.arange(start, start + position), torch.arange(kept_starts[video], kept_starts[video] + n),
                                torch.arange(start + position + 1, start + length)]))  # fmt: skip
        labels.append(
            torch.cat([sample_labels[:position], torch.full((n,), IGNORE_INDEX), sample_labels[position + 1 :]])
        )
    lengths = [len(i) for i in index]
    gather = pad_sequence(index, batch_first=True, padding_value=padding)
    inputs = table[gather.to(device)]
    per_video = list(raw.split(video_counts)) if video_counts else []
    raw_scores = [None if video is None else per_video[video] for _, _, _, video in per_sample]
    return MicroBatchEmbeds(
        inputs, pad_sequence(labels, batch_first=True, padding_value=IGNORE_INDEX).to(device), lengths, raw_scores
    )
