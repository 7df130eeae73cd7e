"""Answer one question with the text streamed out token by token and a way to stop early.

:func:`answer_streaming` runs :meth:`recot.engine.VideoChat.ask` (so budgets,
selection, seeding and the returned :class:`recot.engine.Answer` are the
engine's) and hands transformers' ``generate`` two more arguments: a streamer
that turns new token ids into text pieces, and a stopping criterion that ends
generation when the client has gone or the request's time is up.
``VideoChat.ask`` takes no extra ``generate`` arguments yet, so they are added
here, for the duration of the call, by wrapping the model's ``generate``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from recot.engine import Answer, GenerationOptions, VideoChat, VideoEncoding
from recot.model.videoxl_pro import VideoXLPro
from recot.serve.schemas import SelectionMap
from recot.serve.selection import capture_selection

# Text held back at the end of what has been generated so far: whitespace (the
# final answer is stripped) and U+FFFD (a multi-byte character not complete yet).
_UNSETTLED_TAIL = re.compile(r"[\s\ufffd]+$")


class TextDeltas(BaseStreamer):
    """A ``generate`` streamer: calls ``on_text(piece)`` with each new settled piece of the answer.

    The pieces joined are always a prefix of the final answer text (see
    :meth:`finish`, which sends the rest).
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.ids: list[int] = []
        self.sent = ""
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate first hands over the prompt's ids (none: the prompt is embeddings)
            self._prompt_seen = True
            return
        self.ids.extend(value.flatten().tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        settled = _UNSETTLED_TAIL.sub("", text)
        if len(settled) > len(self.sent) and settled.startswith(self.sent):
            self.on_text(settled[len(self.sent) :])
            self.sent = settled

    def end(self) -> None:
        pass

    def finish(self, answer: str) -> None:
        """Send what the final ``answer`` has beyond the pieces sent so far."""
        if answer.startswith(self.sent) and len(answer) > len(self.sent):
            self.on_text(answer[len(self.sent) :])
            self.sent = answer


class StopWhen(StoppingCriteria):
    """Stops generation as soon as ``should_stop()`` is true (checked after every new token)."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop
        self.stopped = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.stopped = self.stopped or bool(self.should_stop())
        return torch.full((input_ids.shape[0],), self.stopped, dtype=torch.bool, device=input_ids.device)


@contextmanager
def _generate_with(model: VideoXLPro, **extra: Any) -> Iterator[None]:
    """Within the block, ``model.generate`` also receives ``extra`` keyword arguments."""
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> torch.Tensor:
        return original(*args, **kwargs, **extra)

    model.generate = generate  # an instance attribute shadows the method
    try:
        yield
    finally:
        del model.generate


def answer_streaming(
    chat: VideoChat,
    encoding: VideoEncoding,
    question: str,
    options: GenerationOptions,
    on_text: Callable[[str], None],
    on_selection: Callable[[SelectionMap], None],
    should_stop: Callable[[], bool],
) -> tuple[Answer, bool]:
    """Answer ``question``; returns the engine's answer and whether ``should_stop`` cut it short.

    ``on_selection`` receives the selector's per-group map before the first
    token, ``on_text`` the answer's text piece by piece.
    """
    streamer = TextDeltas(chat.processor.tokenizer, on_text)
    stop = StopWhen(should_stop)
    with capture_selection(chat.model, encoding.encoded.timestamps, on_selection):
        with _generate_with(chat.model, streamer=streamer, stopping_criteria=StoppingCriteriaList([stop])):
            answer = chat.ask(encoding, question, options)
    streamer.finish(answer.answer)
    return answer, stop.stopped


def finish_reason(answer: Answer, stop_token_ids: list[int], max_new_tokens: int) -> str:
    """OpenAI's ``finish_reason``: ``"length"`` when the token limit ended the answer, else ``"stop"``."""
    ended_on_stop = bool(answer.token_ids) and answer.token_ids[-1] in stop_token_ids
    return "length" if answer.new_tokens >= max_new_tokens and not ended_on_stop else "stop"
