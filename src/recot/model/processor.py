"""Turning frames, timestamps and a question into Video-XL-Pro inputs.

Follows the released preprocessing: each frame RGB, resized straight to SxS
(bicubic, aspect ratio not kept), scaled by 1/255 and normalised with mean =
std = 0.5; the prompt is Qwen's ChatML with ``<image>`` where the video goes;
each group of frames is introduced by ``Time 0004.0s:`` text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from recot.config import IMAGE_TOKEN, VideoXLProConfig
from recot.data.clock import clock_time
from recot.model.frames import normalize_frames
from recot.model.groups import GroupPlan

Frames = np.ndarray | torch.Tensor | Image.Image | Sequence[Image.Image | np.ndarray]

# A clock as the prompts and answers write it (clock_time): mm:ss, or h:mm:ss from an hour on.
CLOCK_PATTERN = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![\d:])")


class VideoXLProProcessor:
    """Tokenizer + frame preprocessing + prompt template for one model config."""

    def __init__(self, tokenizer: Any, config: VideoXLProConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        placeholder = tokenizer.convert_ids_to_tokens(config.placeholder_token_id)
        if placeholder is None:
            raise ValueError(
                f"placeholder_token_id {config.placeholder_token_id} is not in the tokenizer's vocabulary"
            )

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VideoXLProProcessor:
        """Load the tokenizer and config of a model directory."""
        from transformers import AutoTokenizer, PretrainedConfig

        # An empty config stops AutoTokenizer from reading config.json, whose
        # model_type (llava_qwen) transformers does not know; the tokenizer
        # class comes from tokenizer_config.json.
        tokenizer = AutoTokenizer.from_pretrained(str(path), config=PretrainedConfig())
        return cls(tokenizer, VideoXLProConfig.load(Path(path) / "config.json"))

    # ----- frames -------------------------------------------------------------
    def preprocess_frames(self, frames: Frames) -> torch.Tensor:
        """RGB frames -> (N, 3, S, S) float32 pixel values.

        Accepts a uint8 array (N, H, W, 3) or (H, W, 3), a PIL image, or a
        sequence of either. Frames are resized with PIL's bicubic filter, as the
        released SigLIP image processor does.
        """
        if isinstance(frames, (Image.Image, np.ndarray, torch.Tensor)) and not (
            isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 4
        ):
            frames = [frames]
        size = self.config.image_size
        out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            image = frame if isinstance(frame, Image.Image) else Image.fromarray(_as_uint8_rgb(frame))
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BICUBIC)
            out[i] = np.asarray(image)
        return self.normalize(torch.from_numpy(out))

    def normalize(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, S, S, 3) already at the model's size -> normalised float32 (N, 3, S, S)."""
        return normalize_frames(frames, self.config.image_mean, self.config.image_std)

    # ----- text -----------------------------------------------------------------
    def prompt(
        self, question: str, with_video: bool = True, system_prompt: str | None = None, answer_prefix: str = ""
    ) -> str:
        """The chat prompt, ``<image>`` marking the video, ending where the answer starts.

        ``system_prompt`` replaces ``config.system_prompt`` for this prompt
        (None: the config's). ``answer_prefix`` is put after
        ``<|im_start|>assistant\n`` as the start of the assistant's turn (a
        prefill, e.g. a benchmark's "Best option:("); the model continues it.
        With neither, the prompt is the released template.
        """
        system = self.config.system_prompt if system_prompt is None else system_prompt
        user = f"{IMAGE_TOKEN}\n{question}" if with_video else question
        return (
            f"<|im_start|>system\n{system}<|im_end|>\n"
            f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{answer_prefix}"
        )

    def tokenize_prompt(
        self, question: str, with_video: bool = True, system_prompt: str | None = None, answer_prefix: str = ""
    ) -> torch.Tensor:
        """(L,) ids of :meth:`prompt`; ``<image>`` becomes the single id ``config.image_token_index``."""
        if not question or not question.strip():
            raise ValueError("the question is empty")
        if IMAGE_TOKEN in answer_prefix or (system_prompt is not None and IMAGE_TOKEN in system_prompt):
            # The video goes where the one <image> of the user turn is; a second would misplace it.
            raise ValueError(f"{IMAGE_TOKEN} may appear only in the question, not in the system prompt or prefix")
        ids: list[int] = []
        for i, chunk in enumerate(self.prompt(question, with_video, system_prompt, answer_prefix).split(IMAGE_TOKEN)):
            if i:
                ids.append(self.config.image_token_index)
            ids += self.tokenizer(chunk, add_special_tokens=False).input_ids
        return torch.tensor(ids, dtype=torch.long)

    def clock_times(self, input_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """(L,) float64: for each id of a prompt, the time in seconds of the clock (``mm:ss`` or ``h:mm:ss``) its
        text belongs to, NaN elsewhere; the marks ``time_vector`` models add time vectors at
        (:mod:`recot.model.time_vectors`). Ids outside the tokenizer (the image marker) have no text."""
        ids = torch.as_tensor(input_ids).tolist()
        size = len(self.tokenizer)
        pieces = self.tokenizer.batch_decode([[i] if 0 <= i < size else [] for i in ids])
        ends = np.cumsum([len(piece) for piece in pieces])
        times = torch.full((len(ids),), float("nan"), dtype=torch.float64)
        for match in CLOCK_PATTERN.finditer("".join(pieces)):
            seconds = clock_seconds(match)
            # the tokens whose text overlaps the match: from the one that ends past its start, to the one holding its end
            start, stop = np.searchsorted(ends, match.start(), "right"), np.searchsorted(ends, match.end(), "left")
            times[start : stop + 1] = float(seconds)
        return times

    def time_text(self, seconds: float) -> str:
        """The text before a group's visual tokens: ``config.time_format`` of its start time in seconds."""
        if self.config.time_format == "clock":
            return clock_time(seconds)
        return self.config.time_format.format(t=seconds)

    def time_text_tokens(self, seconds: float = 0.0) -> int:
        """Tokens of one group's timestamp text (``Time 0004.0s:``: 10 with Qwen2.5, 13 with the byte tokenizer)."""
        return len(self.tokenizer(self.time_text(seconds), add_special_tokens=False).input_ids)

    def time_sequence_ids(self, group_timestamps: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """(L_s,) ids: per group its ``Time ...s:`` text, then P placeholder ids."""
        placeholders = [self.config.placeholder_token_id] * self.config.tokens_per_group
        texts = [self.time_text(t) for t in torch.as_tensor(group_timestamps, dtype=torch.float64).tolist()]
        ids: list[int] = []
        # One batched call: thousands of groups tokenise in one pass of the Rust tokenizer.
        for text_ids in self.tokenizer(texts, add_special_tokens=False).input_ids if texts else []:
            ids += text_ids + placeholders
        return torch.tensor(ids, dtype=torch.long)

    def group_timestamps(self, frame_timestamps: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """(G,) the time of each group's first frame, after filling groups."""
        times = torch.as_tensor(frame_timestamps, dtype=torch.float64)
        return GroupPlan.for_config(len(times), self.config).group_timestamps(times)

    def __call__(
        self, question: str, frames: Frames | None = None, timestamps: Sequence[float] | None = None
    ) -> dict[str, torch.Tensor]:
        """Model inputs for one question about a video (or image, or no visual input).

        Returns ``input_ids`` and, with frames, ``pixel_values``, ``timestamps``
        and ``time_sequence_ids``; for a model that reads the prompt's clocks
        (``config.uses_clock_times``) also ``input_times`` (:meth:`clock_times`).
        An image is one frame at time 0 (it fills a group by repetition).
        """
        if frames is None:
            ids = self.tokenize_prompt(question, with_video=False)
            return {"input_ids": ids, **self._clock_inputs(ids)}
        pixel_values = self.preprocess_frames(frames)
        if timestamps is None:
            if len(pixel_values) != 1:
                raise ValueError(f"{len(pixel_values)} frames need their timestamps")
            timestamps = [0.0]
        if len(timestamps) != len(pixel_values):
            raise ValueError(f"{len(pixel_values)} frames but {len(timestamps)} timestamps")
        ids = self.tokenize_prompt(question)
        return {
            "input_ids": ids,
            "pixel_values": pixel_values,
            "timestamps": torch.as_tensor(timestamps, dtype=torch.float64),
            "time_sequence_ids": self.time_sequence_ids(self.group_timestamps(timestamps)),
            **self._clock_inputs(ids),
        }

    def _clock_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"input_times": ...}`` for a model that reads the prompt's clocks, else nothing."""
        return {"input_times": self.clock_times(input_ids)} if self.config.uses_clock_times else {}

    @property
    def stop_token_ids(self) -> list[int]:
        """Ids that end an answer: the chat template's ``<|im_end|>`` and the tokenizer's eos."""
        ids = [self.tokenizer.convert_tokens_to_ids("<|im_end|>"), self.tokenizer.eos_token_id]
        unknown = self.tokenizer.unk_token_id
        return sorted({i for i in ids if i is not None and i != unknown})

    def decode(self, ids: torch.Tensor) -> str:
        """Generated ids -> text, special tokens dropped."""
        return self.tokenizer.decode(torch.as_tensor(ids).flatten().tolist(), skip_special_tokens=True).strip()


def shift_clocks(text: str, seconds: int) -> str:
    """``text`` with every clock in it (``mm:ss``, ``h:mm:ss``: ``CLOCK_PATTERN``) ``seconds`` later, written
    by :func:`clock_time` (``"59:30"`` moved 120 s is ``"1:01:30"``)."""

    return CLOCK_PATTERN.sub(lambda match: clock_time(clock_seconds(match) + seconds), text)


def clock_seconds(match: re.Match[str]) -> int:
    """Seconds of a ``CLOCK_PATTERN`` match: ``mm:ss``, or ``h:mm:ss`` with a third group."""
    first, second, third = match.groups()
    hours, minutes, secs = (0, first, second) if third is None else (first, second, third)
    return int(hours) * 3600 + int(minutes) * 60 + int(secs)


def _as_uint8_rgb(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    array = frame.cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"a frame must be (H, W, 3), got shape {array.shape}")
    return array[..., :3]
