"""``VideoChat``: load a model once, encode each video once, answer many questions.

A video is probed, sampled (:func:`recot.video.plan_frames`), decoded in
batches and encoded by the streaming encoder; the compressed tokens go to the
encode cache. Decoding runs ahead of encoding in a background thread
(:func:`recot.data.prefetch.prefetch`, a bounded queue), spread over worker
processes for long videos (:func:`recot.video.parallel.iter_frames_parallel`),
so a video costs about the slower of decoding and encoding rather than their
sum. On CUDA the uint8 frames are pinned in that thread and uploaded without
blocking. Each question then runs only the query-aware selector and the
language model on those tokens. The visual-token budget the LLM sees is the
smaller of ``max_visual_tokens`` (by default the model's own) and what fits its context
(``max_position_embeddings``) next to the prompt, the timestamp text and the
answer; ``max_visual_tokens="all"`` lifts the context cap (the released
model's operating point).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from tqdm.auto import tqdm

from recot.data.prefetch import prefetch
from recot.engine.cache import EncodingCache, content_digest, model_fingerprint
from recot.model.checkpoint import CheckpointError
from recot.model.encoder import EncodedVideo, StreamingEncoder
from recot.model.groups import GroupPlan
from recot.model.processor import VideoXLProProcessor
from recot.model.selector import (
    ALL_VISUAL_TOKENS,
    VisualTokenLimit,
    context_budget,
    context_overflow,
    kept_time_tokens,
    num_kept,
)
from recot.model.videoxl_pro import VideoXLPro, layout_from_ids
from recot.video import (
    FrameBatch,
    PartialDecodeWarning,
    SamplePlan,
    VideoDecodeError,
    plan_frames,
    probe,
)
from recot.video.parallel import iter_frames_parallel

# Decoded batches the decoding thread may hold ready ahead of the encoder.
PREFETCH_BATCHES = 2


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a video to encode (see :func:`recot.video.plan_frames`).

    ``num_frames`` (uniform) or ``fps``; ``max_frames`` caps either; ``start``/``end``
    in seconds. The default, one frame a second up to 4,096 frames, covers an
    hour-long video.
    """

    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.num_frames is not None and self.fps is not None:
            raise ValueError("give num_frames or fps, not both")
        for name in ("num_frames", "max_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")

    def resolved(self) -> FrameSampling:
        """With the default rule filled in when neither ``num_frames`` nor ``fps`` is given."""
        if self.num_frames is None and self.fps is None:
            return FrameSampling(None, 1.0, self.max_frames or 4096, self.start, self.end)
        return self


@dataclass(frozen=True)
class GenerationOptions:
    """How to answer: selection (``keep_ratio``, ``max_visual_tokens``) and decoding.

    ``max_visual_tokens``: the most visual tokens the LLM sees; None (default):
    the model's own budget (``config.max_visual_tokens``, 64 for the default
    model), else as many as fit its context next to the prompt, timestamps and answer;
    ``"all"``: ``keep_ratio`` of every visual token, as the released model
    does, even past the context the LLM was trained on (32K for Qwen2.5; a
    :class:`BeyondContextWarning` says when). Greedy unless ``do_sample``;
    sampling draws from a generator seeded with ``seed``, so the same call
    gives the same answer.
    """

    keep_ratio: float | None = None
    max_visual_tokens: VisualTokenLimit = None
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.keep_ratio is not None and not 0.0 < self.keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        limit = self.max_visual_tokens
        if (isinstance(limit, str) and limit != ALL_VISUAL_TOKENS) or isinstance(limit, bool):
            raise ValueError(f"max_visual_tokens must be a positive number or 'all', got {limit!r}")
        if isinstance(limit, int) and limit < 1:
            raise ValueError(f"max_visual_tokens must be >= 1, got {limit}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


class BeyondContextWarning(UserWarning):
    """The LLM's input runs past the context it was trained on (``max_visual_tokens="all"``)."""


@dataclass
class VideoEncoding:
    """A video's encoded tokens with where they came from (returned by :meth:`VideoChat.encode`)."""

    video: str
    encoded: EncodedVideo
    num_frames: int
    frame_indices: list[int] | None
    cache_hit: bool
    encode_seconds: float
    key: str | None = None


class Timings(BaseModel):
    """Seconds spent: obtaining the encoded video (decode + encode, or a cache read), answering, total."""

    encode: float
    answer: float
    total: float


class Answer(BaseModel):
    """The answer to one question, with what it cost (the record ``recot ask --json`` prints)."""

    video: str
    question: str
    answer: str
    token_ids: list[int]
    frames: int
    groups: int
    visual_tokens: int
    visual_tokens_kept: int
    llm_input_tokens: int
    new_tokens: int
    cache_hit: bool
    timings: Timings


class VideoChat:
    """Answer questions about long videos with one loaded Video-XL-Pro model.

    ``cache`` stores encoded videos on disk (None: no disk cache).
    ``decode_workers``: processes that decode a video (None: by core count and
    video length, see :func:`recot.video.parallel.default_decode_workers`).
    ``compile``: wrap the vision tower and the compressor in ``torch.compile``
    (faster encoding on a GPU after a one-off compilation; the tokens agree with
    eager ones within floating-point tolerance, and cached encodings are shared
    between the two). Typical use::

        chat = VideoChat.from_pretrained("path/to/model")
        print(chat.ask("movie.mp4", "What happens at the end?").answer)
    """

    def __init__(
        self,
        model: VideoXLPro,
        processor: VideoXLProProcessor,
        cache: EncodingCache | None = None,
        progress: bool = False,
        checkpoint_dir: str | Path | None = None,
        decode_workers: int | None = None,
        compile: bool = False,
    ) -> None:
        if decode_workers is not None and decode_workers < 1:
            raise ValueError(f"decode_workers must be >= 1, got {decode_workers}")
        self.model = model.eval()
        self.processor = processor
        self.cache = cache
        self.progress = progress
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.decode_workers = decode_workers
        self._model_id: str | None = None
        if compile:
            compile_encoder(self.model)

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = "default",
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        cache: EncodingCache | str | Path | bool | None = True,
        progress: bool = False,
        decode_workers: int | None = None,
        compile: bool = False,
    ) -> VideoChat:
        """Load a model and its tokenizer (``decode_workers``, ``compile``: see :class:`VideoChat`).

        ``model``: ``"default"`` (the trained model that ships in the package; it
        answers "what is on screen at mm:ss?", the scene or the object, about synthetic-QA videos), an
        untrained preset name (``"small"``, ``"tiny"``) or a checkpoint directory;
        see :func:`recot.engine.resolve_model`. ``cache``: where encoded videos are
        kept on disk. True (the default) is ``EncodingCache()``: ``$RECOT_CACHE_DIR``,
        else the user cache directory (``platformdirs.user_cache_dir("recot")``,
        e.g. ``~/.cache/recot`` on Linux), limited to ``$RECOT_CACHE_SIZE`` or 20 GB;
        a path is a cache under that directory; False or None keeps no disk cache.
        An untrained preset is written once under the cache's directory (else the
        default one) in ``models/``.

        Raises :class:`recot.CheckpointError` (a ``ValueError``) for a specification
        that names no model, or a checkpoint that cannot be loaded.
        """
        from recot.engine.default_model import resolve_model

        if cache is True:
            cache = EncodingCache()
        elif cache is False or cache is None:
            cache = None
        elif not isinstance(cache, EncodingCache):
            cache = EncodingCache(cache)
        try:
            path = resolve_model(model).checkpoint_dir(cache.root if cache is not None else None)
        except ValueError as exc:
            raise CheckpointError(str(exc)) from exc
        loaded = VideoXLPro.from_pretrained(path, dtype=dtype, device=device)
        try:
            processor = VideoXLProProcessor.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load the tokenizer of {path}: {exc}") from exc
        return cls(loaded, processor, cache=cache, progress=progress, checkpoint_dir=path,
                   decode_workers=decode_workers, compile=compile)  # fmt: skip

    # ----- identity -------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Identity of the model for cache keys (:func:`recot.engine.cache.model_fingerprint`).

        Computed on first use and kept for the life of this ``VideoChat``:
        weights changed in place afterwards are not seen.
        """
        if self._model_id is None:
            digest = self.cache.file_digest if self.cache is not None else content_digest
            self._model_id = model_fingerprint(self.model, self.checkpoint_dir, digest)
        return self._model_id

    # ----- encoding ---------------------------------------------------------------
    def plan(self, video: str | Path, sampling: FrameSampling | None = None) -> SamplePlan:
        """Probe ``video`` and choose its frames (raises ``recot.video.VideoDecodeError`` subclasses)."""
        s = (sampling or FrameSampling()).resolved()
        return plan_frames(probe(video), num_frames=s.num_frames, fps=s.fps, max_frames=s.max_frames, start=s.start, end=s.end)

    def encode(
        self,
        video: str | Path,
        sampling: FrameSampling | None = None,
        use_cache: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> VideoEncoding:
        """Encode a video file (or image, or frames directory), from the cache when possible.

        ``on_progress(groups_done, groups_total)`` is called after each encoded
        chunk (a server answers waiting questions there; raising abandons the encode).
        """
        path = str(video)
        return self.encode_planned(path, self.plan(path, sampling), use_cache, on_progress)

    def encode_planned(
        self,
        video: str | Path,
        plan: SamplePlan,
        use_cache: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> VideoEncoding:
        """:meth:`encode` with the frames already planned (:meth:`plan`)."""
        started = time.perf_counter()
        path = str(video)
        if self.cache is None or not use_cache:
            encoded, indices = self._encode_plan(path, plan, on_progress)
            return VideoEncoding(path, encoded, len(indices), indices.tolist(), False, time.perf_counter() - started)
        key = self.cache.key(path, plan.indices, self.model_id)

        def compute() -> tuple[EncodedVideo, dict[str, Any]]:
            encoded, indices = self._encode_plan(path, plan, on_progress)
            return encoded, {
                "video": str(Path(path).resolve()),
                "rule": plan.rule,
                "frames": len(indices),
                "frame_indices": json.dumps(indices.tolist()),
                "model_id": self.model_id,
            }

        encoded, metadata, hit = self.cache.get_or_compute(key, compute)
        indices = json.loads(metadata["frame_indices"]) if "frame_indices" in metadata else None
        return VideoEncoding(path, encoded, int(metadata["frames"]), indices, hit, time.perf_counter() - started, key)

    def _encode_plan(
        self, path: str, plan: SamplePlan, on_progress: Callable[[int, int], None] | None = None
    ) -> tuple[EncodedVideo, np.ndarray]:
        """Stream-encode the planned frames in one decoding pass.

        Returns the encoding and the source frame index of each planned
        position. A planned frame that fails to decode is replaced by its
        nearest decoded predecessor (successor at the start), with a warning, so
        the group layout holds and the file is read once. Decoding (with gap
        filling and, on CUDA, pinning) runs in a background thread, at most
        ``PREFETCH_BATCHES`` batches ahead of the encoder.
        """
        config = self.model.config
        groups = GroupPlan.for_config(len(plan), config)
        chunk = config.compressor_batch_size * config.frames_per_group
        filler = FrameGapFiller(plan.indices)
        pin = self.model.device.type == "cuda"

        def decoded_batches(decode_bar: tqdm) -> Iterable[tuple[torch.Tensor, np.ndarray]]:
            """Complete plan-ordered uint8 batches (runs in the prefetch thread)."""
            batches = iter_frames_parallel(path, plan, batch_size=chunk, size=config.image_size, workers=self.decode_workers)
            for batch in batches:
                decode_bar.update(len(batch))
                yield _host_frames(filler.fill(batch), pin)
            tail = filler.finish()
            if tail is None:
                raise VideoDecodeError(path, "no planned frame could be decoded")
            if len(tail):
                yield _host_frames(tail, pin)

        with _bar(self.progress, len(plan), "decode", "frame", 0) as decode_bar, _bar(
            self.progress, groups.num_groups, "encode", "group", 1
        ) as encode_bar, torch.inference_mode():
            done = 0

            def on_groups(n: int) -> None:
                nonlocal done
                done += n
                encode_bar.update(n)
                if on_progress is not None:
                    on_progress(done, groups.num_groups)

            encoder = StreamingEncoder(self.model, len(plan), on_groups=on_groups)
            with prefetch(decoded_batches(decode_bar), depth=PREFETCH_BATCHES) as batches:
                for frames, timestamps in batches:
                    encoder.add(frames, timestamps)
            encoded = encoder.finish()
        if filler.missing:
            warnings.warn(
                f"{path}: {filler.missing} of {len(plan)} planned frames could not be decoded; "
                "each was replaced by the nearest decoded frame",
                PartialDecodeWarning,
                stacklevel=3,
            )
        return encoded, filler.source_indices

    # ----- answering -------------------------------------------------------------------
    def ask(
        self,
        video: str | Path | VideoEncoding,
        question: str,
        options: GenerationOptions | None = None,
        sampling: FrameSampling | None = None,
        *,
        system_prompt: str | None = None,
        answer_prefix: str = "",
    ) -> Answer:
        """Answer ``question`` about a video path or a :class:`VideoEncoding` from :meth:`encode`.

        ``system_prompt`` replaces the model's system prompt (``config.system_prompt``)
        for this question; ``answer_prefix`` starts the assistant's turn (a prefill,
        e.g. "Best option:(") and the model continues it. ``Answer.answer`` is the
        generated continuation only, without the prefix, as benchmarks that prefill
        score it.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty")
        if isinstance(video, VideoEncoding) and sampling is not None:
            raise ValueError("sampling applies to a video file; this VideoEncoding was sampled when it was encoded")
        started = time.perf_counter()
        encoding = video if isinstance(video, VideoEncoding) else self.encode(video, sampling)
        encode_seconds = time.perf_counter() - started if not isinstance(video, VideoEncoding) else 0.0
        opts = options or GenerationOptions()
        answer_started = time.perf_counter()
        input_ids = self.processor.tokenize_prompt(question, system_prompt=system_prompt, answer_prefix=answer_prefix)
        time_ids = self.processor.time_sequence_ids(encoding.encoded.timestamps)
        num_visual = encoding.encoded.tokens.shape[0] * encoding.encoded.tokens.shape[1]
        time_tokens = len(time_ids) - num_visual
        config = self.model.config
        longest_time = None  # only a model that drops the times of unselected groups needs it
        if config.drop_empty_group_times:
            longest_time = max(n for _, n, _ in layout_from_ids(time_ids, config.placeholder_token_id).windows)
        budget = context_budget(
            config, len(input_ids) - 1, time_tokens, opts.max_new_tokens, opts.max_visual_tokens,
            longest_group_time=longest_time,
        )  # fmt: skip
        keep_ratio = config.keep_ratio if opts.keep_ratio is None else opts.keep_ratio
        kept = num_kept(config, num_visual, keep_ratio, budget)
        input_bound = len(input_ids) - 1 + kept_time_tokens(config, time_tokens, kept, longest_time) + kept
        overflow = context_overflow(self.model.config, input_bound, opts.max_new_tokens)
        if overflow:
            warnings.warn(
                f"{encoding.video}: max_visual_tokens='all' keeps {kept} of {num_visual} visual tokens: the LLM input "
                f"({'up to ' if config.drop_empty_group_times else ''}{input_bound} tokens) and {opts.max_new_tokens} new tokens run {overflow} tokens past the "
                f"{self.model.config.max_position_embeddings}-token context it was trained on",
                BeyondContextWarning,
                stacklevel=2,
            )
        tokenizer = self.processor.tokenizer
        generate_kwargs: dict[str, Any] = {
            "max_new_tokens": opts.max_new_tokens,
            "do_sample": opts.do_sample,
            "eos_token_id": self.processor.stop_token_ids,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        }
        if opts.do_sample:
            generate_kwargs.update(temperature=opts.temperature, top_p=opts.top_p)
        devices = [self.model.device.index or 0] if self.model.device.type == "cuda" else []
        # The LLM input's length as selected: with drop_empty_group_times the timestamps kept depend on the scores.
        selected: list[int] = []
        hook = self.model.selector.register_forward_hook(lambda _m, _a, out: selected.append(len(out.sequence)))
        with torch.random.fork_rng(devices=devices), hook:  # sampling is seeded; the caller's RNG is untouched
            torch.manual_seed(opts.seed)
            new_ids = self.model.generate(
                input_ids,
                encoded=encoding.encoded,
                time_sequence_ids=time_ids,
                keep_ratio=keep_ratio,
                max_visual_tokens=budget,
                input_times=self.processor.clock_times(input_ids) if self.model.config.uses_clock_times else None,
                **generate_kwargs,
            )
        text = self.processor.decode(new_ids)
        llm_input_tokens = len(input_ids) - 1 + selected[-1]
        finished = time.perf_counter()
        return Answer(
            video=encoding.video,
            question=question,
            answer=text,
            token_ids=new_ids.flatten().tolist(),
            frames=encoding.num_frames,
            groups=encoding.encoded.num_groups,
            visual_tokens=num_visual,
            visual_tokens_kept=kept,
            llm_input_tokens=llm_input_tokens,
            new_tokens=int(new_ids.shape[-1]),
            cache_hit=encoding.cache_hit,
            timings=Timings(encode=encode_seconds, answer=finished - answer_started, total=finished - started),
        )

    def ask_many(
        self,
        items: Iterable[tuple[str | Path, str]],
        options: GenerationOptions | None = None,
        sampling: FrameSampling | None = None,
        *,
        system_prompt: str | None = None,
        answer_prefix: str = "",
    ) -> list[Answer]:
        """Answer (video, question) pairs, encoding each distinct video once; answers in input order.

        ``system_prompt`` and ``answer_prefix`` apply to every question, as in :meth:`ask`.
        """
        items = list(items)
        for i, (_, question) in enumerate(items):
            if not isinstance(question, str) or not question.strip():
                raise ValueError(f"item {i}: the question is empty")
        by_video: dict[str, list[int]] = {}
        for i, (video, _) in enumerate(items):
            by_video.setdefault(str(video), []).append(i)
        answers: list[Answer | None] = [None] * len(items)
        for video, positions in by_video.items():
            encoding = self.encode(video, sampling)
            for n, i in enumerate(positions):
                answer = self.ask(
                    encoding, items[i][1], options, system_prompt=system_prompt, answer_prefix=answer_prefix
                )
                # The first question of a video pays for obtaining its encoding.
                if n == 0:
                    answer.timings = Timings(
                        encode=encoding.encode_seconds,
                        answer=answer.timings.answer,
                        total=encoding.encode_seconds + answer.timings.answer,
                    )
                answers[i] = answer
        return [a for a in answers if a is not None]


class FrameGapFiller:
    """Turns decoded batches into complete plan-ordered batches, filling frames that failed to decode.

    ``planned`` are the planned source frame indices. A missing planned frame
    takes the previous decoded frame (the next one, before the first decoded
    frame), so every planned position has a frame and the group layout holds.
    """

    def __init__(self, planned: np.ndarray) -> None:
        self.planned = np.asarray(planned)
        self.source_indices = np.empty(len(self.planned), dtype=np.int64)
        self.missing = 0
        self._position = 0
        self._leading = 0  # missing positions before the first decoded frame
        self._last: FrameBatch | None = None  # the last decoded frame, as a batch of one

    def fill(self, batch: FrameBatch) -> FrameBatch:
        """The batch with the missing planned frames before and among its frames filled in."""
        start = self._position
        if self._leading == 0 and np.array_equal(batch.indices, self.planned[start : start + len(batch)]):
            self._take(batch, len(batch))  # the common case: nothing missing
            return batch
        rows: list[FrameBatch] = []
        for j in range(len(batch)):
            frame = _rows(batch, j, j + 1)
            while self._position < len(self.planned) and self.planned[self._position] != frame.indices[0]:
                self.missing += 1
                if self._last is None:
                    self._leading += 1  # filled once the first frame arrives
                    self._position += 1
                else:
                    rows.append(self._take(self._last, 1))
            if self._position == len(self.planned):
                raise ValueError(f"the decoder returned frame {int(frame.indices[0])}, which is not in the plan")
            if self._leading:
                self.source_indices[self._position - self._leading : self._position] = frame.indices[0]
                rows.append(FrameBatch.concat([frame] * self._leading))
                self._leading = 0
            rows.append(self._take(frame, 1))
        return FrameBatch.concat(rows) if rows else batch

    def finish(self) -> FrameBatch | None:
        """Frames for the planned positions after the last decoded frame (None: nothing decoded at all)."""
        if self._last is None:
            return None
        remaining = len(self.planned) - self._position
        self.missing += remaining
        return self._take(FrameBatch.concat([self._last] * remaining), remaining) if remaining else _rows(self._last, 0, 0)

    def _take(self, rows: FrameBatch, n: int) -> FrameBatch:
        self.source_indices[self._position : self._position + n] = rows.indices
        self._position += n
        if len(rows):
            self._last = _rows(rows, len(rows) - 1, len(rows))
        return rows


def compile_encoder(model: VideoXLPro) -> None:
    """Compile the vision tower and the compressor in place with ``torch.compile`` (the module objects and their
    parameter names stay, so checkpoints and cache keys are unchanged); the first encode pays the compilation."""
    model.vision_tower.compile()
    model.compressor.compile()


def _host_frames(batch: FrameBatch, pin: bool) -> tuple[torch.Tensor, np.ndarray]:
    """A batch's uint8 frames as a tensor, in pinned memory when ``pin`` (the upload can then run asynchronously)."""
    frames = torch.from_numpy(batch.frames)
    return (frames.pin_memory() if pin else frames), batch.timestamps


def _rows(batch: FrameBatch, start: int, stop: int) -> FrameBatch:
    return FrameBatch(batch.frames[start:stop], batch.indices[start:stop], batch.timestamps[start:stop])


def _bar(enabled: bool, total: int, desc: str, unit: str, position: int) -> tqdm:
    """A tqdm progress bar on stderr (inert when not ``enabled``).

    Bars get their own line (``position``) only on a terminal: elsewhere (a log
    file) the cursor movements that stack them would end up in the text.
    """
    stacked = position if sys.stderr.isatty() else 0
    return tqdm(total=total, desc=desc, unit=unit, position=stacked, disable=not enabled, dynamic_ncols=True)
