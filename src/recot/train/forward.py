"""The training forward pass: frames -> tokens (in chunks, checkpointed) -> selection -> LLM -> summed loss.

Shapes for one sample with N frames (G groups, P tokens per group, D LLM width):

    frames uint8 (N, S, S, 3) -> group order (4G frames) -> chunks of ``compressor_batch_size`` groups:
        [frozen part, no graph] vision tower -> resize -> group            (g, C, 4, h, h)
        [trained part, checkpointed] compressor -> projector -> 2x2 pool    (g, P, D)
    -> EncodedVideo (G, P, D) -> ``VideoXLPro.embed_inputs`` with labels: the selector
       scores only tokens whose label is -100 (prompt, never answers), keep ratio drawn per sample
    -> inputs_embeds (1, L_i, D), labels (1, L_i); a micro-batch is right-padded to (B, L, D)
    -> Qwen2 decoder -> hidden (B, L, D) -> lm_head at labelled positions only -> cross-entropy, summed
    (and, logged beside the loss, how alike each video's tokens are: :func:`visual_similarity`)

The part of the encoder that learns runs under activation checkpointing, one
chunk at a time, so its stored activations are one chunk's, whatever the
video's length; the frozen part runs without a graph. The loss is a sum over
answer tokens (with the token count) so that the trainer can normalise over the
whole global batch, which makes N processes equal one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from recot.model.encoder import EncodedVideo
from recot.model.frames import normalize_frames
from recot.model.groups import GroupPlan
from recot.model.videoxl_pro import VideoXLPro
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


def encode_frames(
    model: VideoXLPro,
    frames: torch.Tensor | None,
    timestamps: torch.Tensor,
    checkpointing: bool,
    grouped: torch.Tensor | None = None,
) -> EncodedVideo:
    """Frames (or cached grouped vision features) -> :class:`EncodedVideo`, with a graph where parameters learn.

    ``frames`` uint8 (N, S, S, 3) with ``timestamps`` (N,); or ``grouped`` (G, C, 4, g, g)
    from :func:`vision_features` with ``timestamps`` (G,) of the groups. Same chunks and
    same result as :meth:`VideoXLPro.encode_video`; only the trained stages keep a graph,
    under activation checkpointing per chunk when ``checkpointing`` is on.
    """
    config = model.config
    train_vision = _requires_grad(model.vision_tower)
    train_compressor = train_vision or _requires_grad(model.compressor)
    train_head = train_compressor or _requires_grad(model.projector)

    def compress(x: torch.Tensor) -> torch.Tensor:
        return model.compressor(x)[:, :, 0].flatten(2).transpose(1, 2)  # (g, h*h, C)

    def head(compressed: torch.Tensor) -> torch.Tensor:
        return model.pool(model.projector(compressed))

    if grouped is not None:
        if train_vision:
            raise ValueError("cached vision features cannot train the vision tower")
        # The cache is read on the CPU; the compressor runs where the model is.
        chunks = list(grouped.to(model.device).split(config.compressor_batch_size))
        stages, trained = [compress, head], [train_compressor, train_head]
        group_times = timestamps.to(torch.float64)
    else:
        plan = GroupPlan.for_config(frames.shape[0], config)
        chunks = [frames[idx] for idx in plan.chunks]
        stages, trained = [lambda x: _vision(model, x), compress, head], [train_vision, train_compressor, train_head]
        group_times = plan.group_timestamps(timestamps)
    # The frozen prefix runs without a graph; the rest, from the first trained stage on, with one.
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
    return EncodedVideo(torch.cat(parts), group_times)


class TrainingForward(nn.Module):
    """``forward(samples)`` -> (summed answer-token loss, answer tokens, LLM input tokens) for a micro-batch.

    ``module`` is the model or its peft wrapper (kept as a submodule so that
    DDP/FSDP/DeepSpeed wrap every parameter); ``model`` is the :class:`VideoXLPro` inside it.
    """

    def __init__(
        self, module: nn.Module, model: VideoXLPro, encoder_checkpointing: bool, max_visual_tokens: int | None
    ) -> None:
        super().__init__()
        self.module = module
        self._model = [model]  # a list: not registered twice
        self.encoder_checkpointing = encoder_checkpointing
        self.max_visual_tokens = max_visual_tokens

    @property
    def model(self) -> VideoXLPro:
        return self._model[0]

    def embed(self, sample: ModelInput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """inputs_embeds (L', D) and labels (L',) of one sample, the video's tokens selected, and the
        :func:`visual_similarity` of its visual tokens (None without a video)."""
        model = self.model
        encoded = None
        similarity = None
        if sample.frames is not None or sample.grouped is not None:
            encoded = encode_frames(model, sample.frames, sample.timestamps, self.encoder_checkpointing, sample.grouped)
            similarity = visual_similarity(encoded.tokens)
        inputs = model.embed_inputs(
            sample.input_ids,
            encoded,
            sample.time_sequence_ids,
            keep_ratio=sample.keep_ratio,
            max_visual_tokens=self.max_visual_tokens,
            labels=sample.labels,
            input_times=sample.input_times,
        )
        return inputs.inputs_embeds[0], inputs.labels[0], similarity

    def forward(self, samples: list[ModelInput]) -> tuple[torch.Tensor, torch.Tensor, int, float, int]:
        """(summed loss, answer tokens, LLM input tokens, summed visual similarity, samples with a video)."""
        embedded = [self.embed(s) for s in samples]
        similarities = [float(sim) for _, _, sim in embedded if sim is not None]
        length = max(e.shape[0] for e, _, _ in embedded)
        dim = embedded[0][0].shape[1]
        device = embedded[0][0].device
        inputs = embedded[0][0].new_zeros(len(samples), length, dim)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long, device=device)
        attention = torch.zeros(len(samples), length, dtype=torch.long, device=device)
        for i, (e, y, _) in enumerate(embedded):
            inputs[i, : len(e)] = e
            labels[i, : len(y)] = y
            attention[i, : len(e)] = 1
        lm = self.model.language_model
        hidden = lm.model(
            inputs_embeds=inputs, attention_mask=None if bool(attention.all()) else attention, use_cache=False
        ).last_hidden_state
        # Position t predicts token t+1; the vocabulary projection only where there is a label.
        targets = labels[:, 1:]
        picked = targets != IGNORE_INDEX
        logits = lm.lm_head(hidden[:, :-1][picked]).float()
        loss_sum = F.cross_entropy(logits, targets[picked], reduction="sum")
        return loss_sum, picked.sum(), int(attention.sum()), sum(similarities), len(similarities)


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
