"""Video-XL-Pro: frames -> SigLIP -> ReCoT compressor -> projector -> pool ->
timestamped time sequence -> query-aware selector -> Qwen2.

Shapes (N frames, G = ceil(N / 4) groups, C vision width, D LLM width,
g grid side, P = (g / pool)^2 tokens per group; released: C=1152, D=2048,
g=24, P=144):

    pixel_values (N, 3, S, S)
      -> vision tower       (N, 729, C)       SigLIP, last layer dropped, no post-LN
      -> resize             (N, C, g, g)      bilinear 27x27 -> 24x24
      -> group              (G, C, 4, g, g)   4 frames per group (official: raw reshape)
      -> compressor         (G, g*g, C)       ReCoT, 4 frames -> 1
      -> projector          (G, g*g, D)       mlp2x_gelu
      -> pool               (G, P, D)         2x2 average
      -> time sequence      (L_s, D)          per group: timestamp text, then P visual tokens
      -> selector           (L_k, D)          rotary + score, top-k visual tokens kept
      -> Qwen2 on [prompt before <image>, kept sequence, prompt after]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2ForCausalLM

from recot.config import VideoXLProConfig
from recot.model import checkpoint
from recot.model.compressor import ReCoTCompressor
from recot.model.encoder import EncodedVideo, EncoderStages, StreamingEncoder
from recot.model.selector import QueryAwareSelector, Selection, TimeSequenceLayout
from recot.model.time_vectors import add_time_vectors, covering_groups, window_times
from recot.model.vision import build_vision_tower, resize_to_grid


def layout_from_ids(time_sequence_ids: torch.Tensor, placeholder_id: int) -> TimeSequenceLayout:
    """Windows of a time sequence: each run of text tokens followed by a run of placeholders."""
    ids = time_sequence_ids.tolist()
    windows, i = [], 0
    while i < len(ids):
        start = i
        while i < len(ids) and ids[i] != placeholder_id:
            i += 1
        text_end = i
        while i < len(ids) and ids[i] == placeholder_id:
            i += 1
        if i == text_end:
            raise ValueError(f"time sequence ends with text tokens at position {start}, no visual tokens follow")
        windows.append((start, text_end - start, i - text_end))
    return TimeSequenceLayout(windows, len(ids))


@dataclass
class LLMInputs:
    """What the language model receives for one prompt (:meth:`VideoXLPro.embed_inputs`).

    ``inputs_embeds`` (1, L', D) and ``labels`` (1, L') aligned with them (or
    None); with a video, the embedded ``time_sequence`` (L_s, D) and the
    selector's :class:`~recot.model.selector.Selection`.
    """

    inputs_embeds: torch.Tensor
    labels: torch.Tensor | None = None
    time_sequence: torch.Tensor | None = None
    selection: Selection | None = None


@dataclass
class VideoXLProIntermediates:
    """Every stage of one forward pass: the encoder's (None when the video came encoded) and the LLM inputs'."""

    encoder: EncoderStages | None
    inputs: LLMInputs


@dataclass
class VideoXLProOutput:
    """Result of :meth:`VideoXLPro.forward`: logits (1, L', vocab), optional loss and intermediates."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    intermediates: VideoXLProIntermediates | None = None


class VideoXLPro(nn.Module):
    """The full Video-XL-Pro model (one sample at a time: long videos fill a device).

    Submodules and their keys in a released-layout checkpoint:
    ``vision_tower`` (``model.vision_tower.vision_tower.vision_model.*``),
    ``compressor`` (``model.sae.*``), ``projector`` (``model.mm_projector.*``),
    ``selector.text_mlp`` (``model.text_mlp.*``), ``selector.window_attention``
    (``model.WindowTimeToTokenAttention.*``), ``language_model`` (``model.*``,
    ``lm_head.*``).
    """

    def __init__(self, config: VideoXLProConfig, attn_implementation: str = "sdpa") -> None:
        """``attn_implementation`` is the LLM's: ``"sdpa"`` (default), ``"eager"`` or,
        where installed, ``"flash_attention_2"``."""
        super().__init__()
        self.config = config
        self.vision_tower = build_vision_tower(config)
        self.compressor = ReCoTCompressor.from_config(config)
        self.projector = nn.Sequential(
            nn.Linear(config.vision_hidden_size, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )
        self.selector = QueryAwareSelector(config)
        text_config = config.text_config()
        text_config._attn_implementation = attn_implementation
        self.language_model = Qwen2ForCausalLM(text_config)

    @property
    def device(self) -> torch.device:
        return self.projector[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.projector[0].weight.dtype

    # ----- frames -> pooled tokens ------------------------------------------
    def group_features(self, features: torch.Tensor) -> torch.Tensor:
        """(4G, C, g, g) -> (G, C, 4, g, g).

        Official layout: a raw row-major reshape, so slot (c', t') of group g
        holds channel (4c'+t') % C of frame 4g + (4c'+t') // C (the released
        weights were trained on this). Clean layout: frame-major, slot t is frame
        4g + t.
        """
        n, c, h, w = features.shape
        t = self.config.frames_per_group
        if n % t:
            raise ValueError(f"{n} frames do not fill groups of {t}; use group_frame_order first")
        if self.config.official_compat:
            return features.reshape(n // t, c, t, h, w)
        return features.reshape(n // t, t, c, h, w).transpose(1, 2)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """(G, g*g, D) -> (G, P, D): average pooling of the g x g grid with ``pool_stride``."""
        g_count, n, d = tokens.shape
        side = self.config.grid_size
        grid = tokens.view(g_count, side, side, d).permute(0, 3, 1, 2)
        pooled = F.avg_pool2d(grid, self.config.pool_stride)
        return pooled.flatten(2).transpose(1, 2)

    def encode_groups(self, pixel_values: torch.Tensor) -> EncoderStages:
        """(4G, 3, S, S) pixel values already in group order -> every stage, ending in (G, P, D) pooled tokens."""
        pixel_values = pixel_values.to(self.device, self.dtype)
        features = self.vision_tower(pixel_values)
        resized = resize_to_grid(features, self.config.grid_size)
        grouped = self.group_features(resized)
        compressed = self.compressor(grouped)  # (G, C, 1, g, g)
        compressed = compressed[:, :, 0].flatten(2).transpose(1, 2)  # (G, g*g, C)
        projected = self.projector(compressed)
        return EncoderStages(features, resized, grouped, compressed, projected, self.pool(projected))

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor, timestamps: torch.Tensor | list[float]) -> EncodedVideo:
        """(N, 3, S, S) pixel values or uint8 (N, S, S, 3) frames, with their times -> :class:`EncodedVideo`.

        The :class:`~recot.model.encoder.StreamingEncoder` fed one batch: frames
        fill whole groups (:class:`~recot.model.groups.GroupPlan`) and are encoded
        ``config.compressor_batch_size`` groups at a time.
        """
        return self._encode(frames, timestamps)[0]

    def _encode(
        self, frames: torch.Tensor, timestamps: torch.Tensor | list[float], keep_stages: bool = False
    ) -> tuple[EncodedVideo, EncoderStages | None]:
        timestamps = torch.as_tensor(timestamps, dtype=torch.float64)
        if timestamps.shape != (frames.shape[0],):
            raise ValueError(f"{frames.shape[0]} frames but {timestamps.numel()} timestamps")
        encoder = StreamingEncoder(self, frames.shape[0], keep_stages=keep_stages, grad=torch.is_grad_enabled())
        encoder.add(frames, timestamps)
        return encoder.finish(), encoder.stages

    # ----- time sequence, selection, prompt -------------------------------------
    def build_time_sequence(
        self, encoded: EncodedVideo, time_sequence_ids: torch.Tensor
    ) -> tuple[torch.Tensor, TimeSequenceLayout]:
        """Embed the time sequence ids and put the visual tokens at the placeholders.

        Returns S (L_s, D) and its layout; the ids come from the processor (or,
        for exact comparison, from the released pipeline). With
        ``config.time_vector``, each group's window (its text and its visual
        tokens) gets the time vector of the group's middle second added.
        """
        time_sequence_ids = time_sequence_ids.to(self.device)
        layout = layout_from_ids(time_sequence_ids, self.config.placeholder_token_id)
        g, p, _ = encoded.tokens.shape
        sizes = [n_visual for _, _, n_visual in layout.windows]
        if sizes != [p] * g:
            raise ValueError(
                f"time sequence has {len(sizes)} windows of {sorted(set(sizes))} placeholders; "
                f"the video has {g} groups of {p} tokens"
            )
        mask = layout.visual_mask.to(self.device)
        # Placeholder rows are overwritten; embedding them as id 0 also lets a
        # small-vocabulary model use the released placeholder id.
        sequence = self.language_model.get_input_embeddings()(time_sequence_ids.masked_fill(mask, 0))
        sequence[mask] = encoded.tokens.reshape(g * p, -1).to(sequence.dtype)
        if self.config.time_vector:
            times = window_times(layout, encoded.timestamps, self.config.frames_per_group)
            sequence = add_time_vectors(sequence, times)
        return sequence, layout

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        encoded: EncodedVideo | None = None,
        time_sequence_ids: torch.Tensor | None = None,
        keep_ratio: float | None = None,
        max_visual_tokens: int | None = None,
        labels: torch.Tensor | None = None,
        input_times: torch.Tensor | None = None,
    ) -> LLMInputs:
        """Prompt ids (L,) with one ``image_token_index`` -> the LLM's :class:`LLMInputs`.

        The selector scores the video against every prompt token except the
        image marker (with ``labels``, only tokens whose label is -100: the answer
        is never scored against). Labels come back aligned with the embeddings.
        ``input_times`` (L,) (``processor.clock_times``): the prompt's clocks get, with
        ``config.clock_grounding``, the mean visual token of the group covering their
        time, then, with ``config.time_vector``, their time vectors (never the
        answer's tokens, which at inference are generated without them).
        """
        input_ids = as_1d(input_ids).to(self.device)
        labels = None if labels is None else as_1d(labels).to(self.device)
        image_positions = (input_ids == self.config.image_token_index).nonzero().flatten().tolist()
        token_embed = self.language_model.get_input_embeddings()
        times = grounding = None
        if self.config.uses_clock_times and input_times is not None:
            times = as_1d(input_times).to(self.device, torch.float64)
            if times.shape != input_ids.shape:
                raise ValueError(f"input_times has shape {tuple(times.shape)}; input_ids has {tuple(input_ids.shape)}")
            if labels is not None:
                times = times.masked_fill(labels != -100, float("nan"))
            if self.config.clock_grounding and encoded is not None:
                positions, groups = covering_groups(encoded.timestamps.numpy(force=True), times.numpy(force=True))
                means = encoded.tokens.mean(1)[torch.from_numpy(groups).to(self.device)]
                rows = torch.from_numpy(positions).to(self.device)
                grounding = means.new_zeros(len(times), means.shape[-1]).index_add_(0, rows, means)

        def embed(start: int, stop: int | None = None) -> torch.Tensor:
            """The embeddings of ``input_ids[start:stop]``, with the clocks' grounding and time vectors if any."""
            out = token_embed(input_ids[start:stop])
            if grounding is not None:
                out = out + grounding[start:stop].to(out.dtype)
            return add_time_vectors(out, times[start:stop]) if self.config.time_vector and times is not None else out

        if not image_positions:
            if encoded is not None:
                raise ValueError("a video was given but input_ids has no image token")
            return LLMInputs(embed(0)[None], None if labels is None else labels[None])
        if len(image_positions) > 1 or encoded is None or time_sequence_ids is None:
            raise ValueError(
                f"input_ids has {len(image_positions)} image tokens; exactly one is needed, "
                "with an encoded video and its time_sequence_ids"
            )
        pos = image_positions[0]
        text_mask = input_ids != self.config.image_token_index
        if labels is not None:
            text_mask &= labels == -100
        text_embeds = token_embed(input_ids[text_mask])

        sequence, layout = self.build_time_sequence(encoded, as_1d(time_sequence_ids))
        ratio = self.config.keep_ratio if keep_ratio is None else keep_ratio
        selection: Selection = self.selector(sequence, layout, text_embeds, ratio, max_visual_tokens)
        inputs_embeds = torch.cat([embed(0, pos), selection.sequence, embed(pos + 1)])
        if labels is not None:
            ignore = labels.new_full((len(selection.sequence),), -100)
            labels = torch.cat([labels[:pos], ignore, labels[pos + 1 :]])[None]
        return LLMInputs(inputs_embeds[None], labels, sequence, selection)

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        timestamps: torch.Tensor | list[float] | None = None,
        time_sequence_ids: torch.Tensor | None = None,
        encoded: EncodedVideo | None = None,
        keep_ratio: float | None = None,
        max_visual_tokens: int | None = None,
        labels: torch.Tensor | None = None,
        return_intermediates: bool = False,
        input_times: torch.Tensor | None = None,
    ) -> VideoXLProOutput:
        """Logits for one prompt, with a video given as frames or as an :class:`EncodedVideo`.

        ``input_ids`` (L,) or (1, L) hold the prompt with one ``image_token_index``
        where the video goes; ``time_sequence_ids`` (L_s,) are the per-group
        timestamp ids and placeholders (see :class:`recot.VideoXLProProcessor`);
        ``input_times`` (L,) the prompt's clock times (``time_vector`` models).
        """
        encoded, stages = self._video(pixel_values, timestamps, encoded, keep_stages=return_intermediates)
        inputs = self.embed_inputs(
            input_ids, encoded, time_sequence_ids, keep_ratio, max_visual_tokens, labels, input_times
        )
        out = self.language_model(inputs_embeds=inputs.inputs_embeds, labels=inputs.labels)
        intermediates = VideoXLProIntermediates(stages, inputs) if return_intermediates else None
        return VideoXLProOutput(out.logits, out.loss, intermediates)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        timestamps: torch.Tensor | list[float] | None = None,
        time_sequence_ids: torch.Tensor | None = None,
        encoded: EncodedVideo | None = None,
        keep_ratio: float | None = None,
        max_visual_tokens: int | None = None,
        input_times: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Answer one prompt; returns the new token ids (1, n). Greedy unless told otherwise.

        ``input_times`` as in :meth:`embed_inputs`. Extra keyword arguments go to transformers' ``generate`` (``max_new_tokens``,
        ``do_sample``, ``temperature``, ``eos_token_id``...), which uses the KV cache.
        """
        encoded, _ = self._video(pixel_values, timestamps, encoded)
        inputs_embeds = self.embed_inputs(
            input_ids, encoded, time_sequence_ids, keep_ratio, max_visual_tokens, input_times=input_times
        ).inputs_embeds
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("max_new_tokens", 128)
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=self.device)
        return self.language_model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, **generate_kwargs
        )

    def _video(
        self,
        pixel_values: torch.Tensor | None,
        timestamps: torch.Tensor | list[float] | None,
        encoded: EncodedVideo | None,
        keep_stages: bool = False,
    ) -> tuple[EncodedVideo | None, EncoderStages | None]:
        """The video of a call: encoded from frames (with its stages when asked), or the given encoding."""
        if pixel_values is None:
            return encoded, None
        if encoded is not None:
            raise ValueError("give the video either as pixel_values or as encoded, not both")
        if timestamps is None:
            raise ValueError("pixel_values need their timestamps")
        return self._encode(pixel_values, timestamps, keep_stages)

    # ----- checkpoints ---------------------------------------------------------
    @classmethod
    def from_config(cls, config: VideoXLProConfig, seed: int, attn_implementation: str = "sdpa") -> VideoXLPro:
        """A new model with weights drawn from ``seed`` (the caller's random state is left alone).

        A tower with published weights (EfficientNet-Lite0) then gets them, which
        needs the optional extra ``recot[efficientnet]``; SigLIP stays random
        (no registry ships its weights).
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(config, attn_implementation=attn_implementation)
        if hasattr(model.vision_tower, "load_imagenet_weights"):
            model.vision_tower.load_imagenet_weights()
        return model

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        attn_implementation: str = "sdpa",
    ) -> VideoXLPro:
        """Load a directory in the released layout (see :mod:`recot.model.checkpoint`)."""
        return checkpoint.load_pretrained(cls, path, dtype=dtype, device=device, attn_implementation=attn_implementation)

    def load_compressor(self, path: str | Path) -> None:
        """Load pre-trained compressor weights (``recot pretrain-compressor``'s ``compressor.safetensors``)."""
        checkpoint.load_compressor(self, path)

    def save_pretrained(self, path: str | Path, tokenizer: Any | None = None, max_shard_size: int | None = None) -> None:
        """Write config, weights (released key names) and tokenizer to ``path`` atomically."""
        checkpoint.save_pretrained(self, path, tokenizer=tokenizer, max_shard_size=max_shard_size)


def as_1d(ids: torch.Tensor) -> torch.Tensor:
    """One sample's ids (L,) from (L,) or (1, L); ``ValueError`` for a batch or another shape."""
    ids = torch.as_tensor(ids)
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise ValueError(f"one sample at a time: got a batch of {ids.shape[0]}")
        ids = ids[0]
    if ids.dim() != 1:
        raise ValueError(f"token ids must be (L,) or (1, L), got {tuple(ids.shape)}")
    return ids
