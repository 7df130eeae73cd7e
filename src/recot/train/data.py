"""Training data: LLaVA-Video / LLaVA-OneVision conversation rows, validated, tokenised with loss masks.

A data file is a JSON list or JSONL of rows::

    {"id": "v_001", "video": "clips/a.mp4",
     "conversations": [{"from": "human", "value": "<image>\\nWhat happens first?"},
                       {"from": "gpt", "value": "A dog jumps."},
                       {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "It swims."}]}

``"image"`` instead of ``"video"`` makes an image row (a one-frame video), neither
a text-only row; media paths are relative to ``media_root``. Each row is
validated (pydantic); a bad row is reported as ``FILE:LINE: reason`` and left
out, or stops the run with ``strict``.

Tokenisation uses the chat template of :meth:`recot.model.processor.VideoXLProProcessor.prompt`
(Qwen ChatML), turn after turn::

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{answer}<|im_end|>\\n   (per turn)

Labels are the token ids on each answer and its closing ``<|im_end|>`` (so the
model learns to stop) and -100 everywhere else: the loss is on assistant turns
only, and the selector, which scores the video against tokens with label -100,
never sees an answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recot.config import IMAGE_TOKEN
from recot.model.processor import VideoXLProProcessor, shift_clocks
from recot.training_utils import validation_problems

IGNORE_INDEX = -100
HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant"}


class DataError(ValueError):
    """A data file or row that cannot be used (the message starts with ``FILE:LINE:``)."""


@dataclass(frozen=True)
class BadRow:
    """A row left out of training: where it is and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class Turn(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    role: Literal["human", "user", "gpt", "assistant", "system"] = Field(alias="from")
    value: str


class ConversationRow(BaseModel):
    """One training row. Other fields (``data_source``, ``task``, ``duration``...) are kept in ``extra``."""

    model_config = ConfigDict(extra="allow")

    id: str | int | None = None
    video: str | None = None
    image: str | list[str] | None = None
    conversations: list[Turn]
    # (start, end) seconds of the video that the answers are read from: the selector learns to keep them
    # (``optim.selector_loss_weight``)
    evidence: list[tuple[float, float]] | None = None

    @field_validator("evidence")
    @classmethod
    def _spans(cls, evidence: list[tuple[float, float]] | None) -> list[tuple[float, float]] | None:
        for start, end in evidence or []:
            if not 0 <= start < end:
                raise ValueError(f"evidence span [{start}, {end}] must have 0 <= start < end (seconds)")
        return evidence

    @field_validator("image")
    @classmethod
    def _one_image(cls, image: str | list[str] | None) -> str | None:
        if isinstance(image, list):
            if len(image) != 1:
                raise ValueError(f"rows with {len(image)} images are not supported (one image or one video per row)")
            return image[0]
        return image

    @model_validator(mode="after")
    def _check_conversation(self) -> ConversationRow:
        if self.video is not None and self.image is not None:
            raise ValueError("a row has a video or an image, not both")
        turns = self.conversations
        if turns and turns[0].role == "system":
            turns = turns[1:]
        if not turns:
            raise ValueError("the conversation has no turns")
        for i, turn in enumerate(turns):
            want = HUMAN_ROLES if i % 2 == 0 else ASSISTANT_ROLES
            if turn.role not in want:
                raise ValueError(f"turn {i + 1} is from {turn.role!r}; turns must alternate human, gpt, human, gpt...")
            if not turn.value.strip():
                raise ValueError(f"turn {i + 1} ({'question' if i % 2 == 0 else 'answer'}) is empty")
        if len(turns) % 2:
            raise ValueError("the conversation ends with a question that has no answer")
        markers = sum(t.value.count(IMAGE_TOKEN) for t in self.conversations)
        if markers > 1:
            raise ValueError(f"{markers} {IMAGE_TOKEN} markers; at most one (where the video or image goes)")
        if markers and self.video is None and self.image is None:
            raise ValueError(f"a {IMAGE_TOKEN} marker but no video or image")
        if self.evidence and self.video is None:
            raise ValueError("evidence (seconds of a video) but no video")
        for i, t in enumerate(turns):
            if IMAGE_TOKEN in t.value and i % 2:
                raise ValueError(f"the {IMAGE_TOKEN} marker is in an answer (turn {i + 1}); it belongs in a question")
        return self


@dataclass
class Sample:
    """A validated row, ready to tokenise: where it came from, its media and its turns."""

    file: str
    line: int
    id: str
    media: Path | None
    kind: Literal["video", "image"] | None
    system: str | None
    turns: list[tuple[str, str]]  # (question, answer) pairs; the marker is in the first question when media is set
    extra: dict[str, Any]
    evidence: tuple[tuple[float, float], ...] = ()  # (start, end) seconds the answers are read from

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def read_rows(path: str | Path) -> list[tuple[int, Any]]:
    """(line, parsed value) of every row of a JSON list or a JSONL file.

    Raises :class:`DataError` (``FILE:LINE: ...``) for a file that is neither;
    a JSONL line that is not JSON becomes a row holding a :class:`DataError`,
    so that it is reported like any bad row.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}:1: cannot read the data file ({exc})") from exc
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _json_list_rows(path, text)
    rows: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            rows.append((number, DataError(f"not valid JSON ({exc.msg} at column {exc.colno})")))
    return rows


def _json_list_rows(path: Path, text: str) -> list[tuple[int, Any]]:
    """Rows of a JSON array with the line each element starts on."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    rows: list[tuple[int, Any]] = []
    line_of = _LineIndex(text)
    while True:
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == "]":
            return rows
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
        rows.append((line_of(pos), value))
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            raise DataError(f"{path}:{line_of(min(pos, len(text) - 1))}: not valid JSON (expected ',' or ']')")


class _LineIndex:
    def __init__(self, text: str) -> None:
        self.starts = np.flatnonzero(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32) == ord("\n"))

    def __call__(self, pos: int) -> int:
        return int(np.searchsorted(self.starts, pos)) + 1


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def parse_row(file: str, line: int, raw: Any, media_root: Path | None) -> Sample:
    """Validate one row; raises :class:`DataError` with the reason (without the ``FILE:LINE`` prefix)."""
    if isinstance(raw, DataError):
        raise raw
    if not isinstance(raw, dict):
        raise DataError(f"a row must be a JSON object, got {type(raw).__name__}")
    try:
        row = ConversationRow.model_validate(raw)
    except ValidationError as exc:
        raise DataError(validation_problems(exc)) from exc
    turns = row.conversations
    system = None
    if turns[0].role == "system":
        system, turns = turns[0].value, turns[1:]
    pairs = [(turns[i].value, turns[i + 1].value) for i in range(0, len(turns), 2)]
    media_name = row.video if row.video is not None else row.image
    kind: Literal["video", "image"] | None = "video" if row.video is not None else ("image" if row.image else None)
    media = None
    if media_name is not None:
        media = Path(media_name) if Path(media_name).is_absolute() or media_root is None else media_root / media_name
        # Rows without the marker put the video before the first question (as LLaVA does).
        if not any(IMAGE_TOKEN in q for q, _ in pairs):
            pairs[0] = (f"{IMAGE_TOKEN}\n{pairs[0][0]}", pairs[0][1])
        elif IMAGE_TOKEN not in pairs[0][0]:
            raise DataError(f"the {IMAGE_TOKEN} marker must be in the first question")
    extra = {k: v for k, v in (row.model_extra or {}).items()}
    sample_id = str(row.id) if row.id is not None else f"{Path(file).name}:{line}"
    evidence = tuple((float(a), float(b)) for a, b in row.evidence or ())
    return Sample(file, line, sample_id, media, kind, system, pairs, extra, evidence)


def check_media(sample: Sample, fps: float, max_frames: int | None) -> None:
    """Probe the sample's media and plan its frames; raises :class:`DataError` when it cannot be used."""
    if sample.media is None:
        return
    from recot.video import VideoDecodeError, plan_frames, probe

    try:
        info = probe(sample.media)
        if sample.kind == "video" and info.is_image:
            raise DataError(f"{sample.media} is an image but the row calls it a video")
        plan = plan_frames(info, fps=None if info.is_image else fps, max_frames=max_frames)
    except VideoDecodeError as exc:
        raise DataError(f"{sample.kind} {exc}") from exc
    if len(plan) == 0:
        raise DataError(f"{sample.kind} {sample.media}: no frame to sample")


def load_dataset(
    files: Sequence[str | Path],
    media_root: str | Path | None = None,
    strict: bool = False,
    check_media_files: bool = True,
    fps: float = 1.0,
    max_frames: int | None = None,
    progress: bool = False,
) -> tuple[list[Sample], list[BadRow]]:
    """Every usable sample of ``files`` in file and line order, and the rows left out.

    With ``strict``, the first bad row raises :class:`DataError` (``FILE:LINE: reason``).
    ``check_media_files`` probes each video/image (missing, unreadable, no frames).
    """
    from tqdm.auto import tqdm

    root = None if media_root is None else Path(media_root)
    samples: list[Sample] = []
    bad: list[BadRow] = []
    for file in files:
        rows = read_rows(file)
        for line, raw in tqdm(rows, desc=f"check {Path(file).name}", unit="row", disable=not progress):
            try:
                sample = parse_row(str(file), line, raw, root)
                if check_media_files:
                    check_media(sample, fps, max_frames)
            except DataError as exc:
                bad.append(BadRow(str(file), line, str(exc)))
                if strict:
                    raise DataError(str(bad[-1])) from exc
                continue
            samples.append(sample)
    return samples, bad


# ----- tokenisation ---------------------------------------------------------------
@dataclass
class TokenizedConversation:
    """``input_ids`` (L,) with one ``image_token_index`` when there is media; ``labels`` (L,), -100 off answers."""

    input_ids: torch.Tensor
    labels: torch.Tensor

    @property
    def num_label_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def shift_timeline(sample: Sample, seconds: int) -> Sample:
    """The sample as if its video began ``seconds`` into a longer one: every clock of its text moved that much
    later (the frames' times move with it in :func:`recot.train.trainer.model_input`). Other samples unchanged."""
    if not seconds or sample.kind != "video":
        return sample
    turns = [(shift_clocks(question, seconds), shift_clocks(answer, seconds)) for question, answer in sample.turns]
    system = None if sample.system is None else shift_clocks(sample.system, seconds)
    return replace(sample, turns=turns, system=system, evidence=shift_spans(sample.evidence, seconds))


def shift_spans(spans: Sequence[tuple[float, float]], seconds: float) -> tuple[tuple[float, float], ...]:
    """(start, end) spans of a video ``seconds`` later, as when its timeline moves (:func:`shift_timeline`)."""
    return tuple((start + seconds, end + seconds) for start, end in spans)


def chat_segments(sample: Sample, system_prompt: str) -> list[tuple[str, bool]]:
    """The conversation as (text, is_answer) pieces of the ChatML template, in order."""
    system = system_prompt if sample.system is None else sample.system
    segments: list[tuple[str, bool]] = [(f"<|im_start|>system\n{system}<|im_end|>\n", False)]
    for i, (question, answer) in enumerate(sample.turns):
        segments.append((f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n", False))
        segments.append((f"{answer}<|im_end|>", True))
        if i + 1 < len(sample.turns):
            segments.append(("\n", False))
    return segments


def tokenize_conversation(sample: Sample, processor: VideoXLProProcessor) -> TokenizedConversation:
    """Ids and labels of a sample (see the module docstring for the template).

    The ids up to the first answer equal ``processor.tokenize_prompt(first_question)``
    (the inference prompt): text is tokenised in the same pieces, split at the marker.
    """
    config = processor.config
    ids: list[int] = []
    labels: list[int] = []
    # The prompt text between answers is joined into one piece, as at inference.
    pieces: list[tuple[str, bool]] = []
    for text, is_answer in chat_segments(sample, config.system_prompt):
        if pieces and not is_answer and not pieces[-1][1]:
            pieces[-1] = (pieces[-1][0] + text, False)
        else:
            pieces.append((text, is_answer))
    for text, is_answer in pieces:
        for j, chunk in enumerate(text.split(IMAGE_TOKEN)):
            if j:
                ids.append(config.image_token_index)
                labels.append(IGNORE_INDEX)
            chunk_ids = processor.tokenizer(chunk, add_special_tokens=False).input_ids if chunk else []
            ids += chunk_ids
            labels += chunk_ids if is_answer else [IGNORE_INDEX] * len(chunk_ids)
    return TokenizedConversation(torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long))


def load_frames(
    sample: Sample, image_size: int, fps: float, max_frames: int | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """uint8 frames (N, S, S, 3) and their times (N,) in seconds, sampled as at inference; None without media.

    Videos: ``fps`` frames a second, capped uniformly at ``max_frames``, resized
    by the decoder (as ``recot ask`` does). An image is one frame at time 0.
    Raises :class:`DataError` naming the sample when decoding fails.
    """
    if sample.media is None:
        return None
    from recot.video import VideoDecodeError, read_frames

    try:
        if sample.kind == "image":
            batch = read_frames(sample.media, size=image_size)
            return batch.frames[:1], np.zeros(1)
        batch = read_frames(sample.media, fps=fps, max_frames=max_frames, size=image_size)
    except VideoDecodeError as exc:
        raise DataError(f"{sample.where}: {exc}") from exc
    if len(batch) == 0:
        raise DataError(f"{sample.where}: {sample.media} decoded to no frame")
    return batch.frames, batch.timestamps


def write_bad_rows(path: Path, bad: Sequence[BadRow]) -> None:
    """The list of left-out rows, one ``FILE:LINE: reason`` a line (atomically)."""
    from recot.data.atomic import atomic_write_text

    atomic_write_text(path, "".join(f"{b}\n" for b in bad))
