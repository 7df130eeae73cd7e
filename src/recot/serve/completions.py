"""``POST /v1/chat/completions``: one question about one video, answered whole or streamed as SSE.

A request goes: admission (429 when ``--max-queue`` requests are in) -> the
media URL to a local file (:mod:`recot.serve.media`) -> its encoding (memory,
disk cache, or the worker) -> an answer job on the worker. Streamed answers are
Server-Sent Events in OpenAI's chunk format: a first chunk with the role, one
with recot's selection map (``recot.selection``), content chunks, a last chunk
with ``finish_reason`` and recot's figures, a usage chunk when
``stream_options.include_usage`` is set, then ``data: [DONE]``. A client that
goes away mid-answer stops the generation at the next token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from recot.engine import GenerationOptions, VideoEncoding
from recot.serve.errors import APIError, too_large, validation_message
from recot.serve.generation import finish_reason
from recot.serve.runtime import Runtime
from recot.serve.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ImagePart,
    RecotInfo,
    SamplingRequest,
    TextPart,
    Usage,
    VideoPart,
)
from recot.serve.worker import AnswerJob, AnswerResult, JobCancelled, JobTimeout, WorkerStopped

log = logging.getLogger("recot.serve")

#: Bytes a chat request body may have beyond the media limit (the JSON around a data: URL).
BODY_SLACK = 1024 * 1024
#: How often a waiting non-streamed request checks whether its client is still there.
DISCONNECT_POLL_SECONDS = 0.25


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, read with a size limit (413 beyond it, 400 when not JSON)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large("the request body", max_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large("the request body", max_bytes)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return data


def question_and_media(request: ChatCompletionRequest) -> tuple[str, str, str]:
    """(question, media URL, its parameter path) of a single-message request; 400 explaining what is wrong."""
    for i, message in enumerate(request.messages):
        if message.role != "user":
            raise APIError(
                400,
                f"messages[{i}] has role {message.role!r}; recot answers one user message "
                "(the model uses its own system prompt)",
                param=f"messages.{i}.role",
                code="unsupported_message",
            )
    if len(request.messages) != 1:
        raise APIError(
            400,
            f"got {len(request.messages)} messages; send one user message with the video and the question "
            "(recot keeps no conversation: a cached video makes each new question cheap)",
            param="messages",
            code="unsupported_message",
        )
    content = request.messages[0].content
    if content is None or isinstance(content, str):
        raise APIError(
            400,
            "the message has no video: add a video_url (or image_url) content part",
            param="messages.0.content",
            code="missing_video",
        )
    texts = [part.text for part in content if isinstance(part, TextPart)]
    media = [(i, part) for i, part in enumerate(content) if isinstance(part, (VideoPart, ImagePart))]
    if not media:
        raise APIError(
            400,
            "the message has no video: add a video_url (or image_url) content part",
            param="messages.0.content",
            code="missing_video",
        )
    if len(media) > 1:
        raise APIError(
            400,
            f"the message has {len(media)} videos/images; recot answers about one at a time",
            param="messages.0.content",
            code="too_many_videos",
        )
    question = "\n".join(t.strip() for t in texts if t.strip())
    if not question:
        raise APIError(
            400,
            "the message has no question: add a text content part",
            param="messages.0.content",
            code="missing_question",
        )
    index, part = media[0]
    url = part.video_url.url if isinstance(part, VideoPart) else part.image_url.url
    kind = "video_url" if isinstance(part, VideoPart) else "image_url"
    return question, url, f"messages.0.content.{index}.{kind}.url"


def generation_options(request: ChatCompletionRequest, runtime: Runtime) -> GenerationOptions:
    """OpenAI sampling fields -> engine options. Greedy unless ``temperature`` > 0."""
    settings = runtime.settings
    max_tokens = (
        request.max_completion_tokens or request.max_tokens or min(settings.default_max_tokens, settings.max_new_tokens)
    )
    if max_tokens > settings.max_new_tokens:
        raise APIError(
            400,
            f"max_tokens {max_tokens} is more than the server allows ({settings.max_new_tokens})",
            param="max_tokens",
            code="invalid_parameter",
        )
    temperature = request.temperature or 0.0
    return GenerationOptions(
        keep_ratio=request.keep_ratio,
        max_visual_tokens=request.max_visual_tokens,
        max_new_tokens=max_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else 1.0,
        top_p=request.top_p if request.top_p is not None else 1.0,
        seed=request.seed if request.seed is not None else 0,
    )


async def create_chat_completion(request: Request, runtime: Runtime) -> JSONResponse | StreamingResponse:
    """Handle one ``POST /v1/chat/completions``."""
    settings = runtime.settings
    body = await read_json(request, settings.max_upload_bytes * 4 // 3 + BODY_SLACK)
    try:
        chat_request = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        message, param = validation_message(exc.errors())
        raise APIError(400, message, param=param, code="invalid_parameter") from exc
    if chat_request.model != settings.model_name:
        raise APIError(
            404,
            f"model {chat_request.model!r} is not served here; this server serves {settings.model_name!r}",
            param="model",
            code="model_not_found",
        )
    question, url, param = question_and_media(chat_request)
    options = generation_options(chat_request, runtime)
    asked = SamplingRequest(**{k: getattr(chat_request, k) for k in SamplingRequest.model_fields})
    deadline = time.monotonic() + settings.request_timeout
    release = runtime.admit_chat()
    submitted = False
    try:
        encoding = await _encoding(runtime, url, param, asked, deadline)
        job = AnswerJob(encoding, question, options, deadline)
        job.future.add_done_callback(lambda _: release())  # the slot is held until the worker is done with the job
        events = AnswerEvents(job) if chat_request.stream else None
        _submit(runtime, job)
        submitted = True
    finally:
        if not submitted:
            release()
    if events is not None:
        stream = _stream(job, events, chat_request, runtime, encoding)
        return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        result = await _wait(job, request, deadline)
    except Exception as exc:
        raise as_api_error(exc, runtime) from exc
    return JSONResponse(_completion(result, job, runtime).model_dump(mode="json"))


async def _encoding(runtime: Runtime, url: str, param: str, asked: SamplingRequest, deadline: float) -> VideoEncoding:
    async with runtime.media.open(url, param) as source:
        if source.upload_id is not None and not any(
            getattr(asked, k) is not None for k in SamplingRequest.model_fields
        ):
            asked = runtime.store.require(source.upload_id).sampling  # the frames the upload was encoded with
        sampling = runtime.sampling(asked)
        try:
            return await asyncio.wait_for(runtime.encoding_for(source, sampling), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError as exc:  # (the builtin TimeoutError only from Python 3.11)
            raise _timeout(runtime, "while the video was being encoded (it goes on in the background)") from exc


def _submit(runtime: Runtime, job: AnswerJob) -> None:
    try:
        runtime.worker.submit_answer(job)
    except WorkerStopped as exc:
        job.future.set_exception(exc)
        raise APIError(503, str(exc), code="shutting_down") from exc


def _timeout(runtime: Runtime, when: str) -> APIError:
    return APIError(
        504,
        f"the request took longer than the server's --request-timeout ({runtime.settings.request_timeout:g} s) {when}",
        code="timeout",
    )


def as_api_error(exc: BaseException, runtime: Runtime) -> APIError:
    """A worker failure as the client error it is (500 for the unexpected, logged)."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, JobTimeout):
        return _timeout(runtime, "waiting for its turn")
    if isinstance(exc, WorkerStopped):
        return APIError(503, str(exc), code="shutting_down")
    if isinstance(exc, JobCancelled):
        return APIError(499, str(exc), code="cancelled")
    if isinstance(exc, ValueError):
        return APIError(400, str(exc), code="invalid_request")
    log.error("answering failed", exc_info=exc)
    return APIError(500, f"internal server error ({type(exc).__name__}); see the server log", code="internal_error")


async def _wait(job: AnswerJob, request: Request, deadline: float) -> AnswerResult:
    """The job's result; cancels it when the client disconnects or the deadline passes well before it ends."""
    future = asyncio.wrap_future(job.future)
    while True:
        done, _ = await asyncio.wait({future}, timeout=DISCONNECT_POLL_SECONDS)
        if done:
            break
        if await request.is_disconnected() or time.monotonic() > deadline + 5.0:
            job.cancelled.set()
    return future.result()


def _usage(result: AnswerResult) -> Usage:
    a = result.answer
    return Usage(
        prompt_tokens=a.llm_input_tokens,
        completion_tokens=a.new_tokens,
        total_tokens=a.llm_input_tokens + a.new_tokens,
        visual_tokens=a.visual_tokens,
        visual_tokens_kept=a.visual_tokens_kept,
    )


def _recot_info(result: AnswerResult, encoding: VideoEncoding, selection: bool) -> RecotInfo:
    a = result.answer
    return RecotInfo(
        frames=a.frames,
        groups=a.groups,
        cache_hit=encoding.cache_hit,
        encode_seconds=round(encoding.encode_seconds, 4),
        answer_seconds=round(a.timings.answer, 4),
        selection=result.selection if selection else None,
    )


def _completion(result: AnswerResult, job: AnswerJob, runtime: Runtime) -> ChatCompletion:
    if result.timed_out:
        raise _timeout(runtime, "while answering")
    if result.cancelled:
        raise APIError(499, "the client went away", code="cancelled")
    reason = finish_reason(result.answer, runtime.chat.processor.stop_token_ids, job.options.max_new_tokens)
    return ChatCompletion(
        id=f"chatcmpl-{secrets.token_hex(12)}",
        created=int(time.time()),
        model=runtime.settings.model_name,
        choices=[Choice(message=AssistantMessage(content=result.answer.answer), finish_reason=reason)],
        usage=_usage(result),
        recot=_recot_info(result, job.encoding, selection=True),
    )


class AnswerEvents:
    """What the worker reports about one answer job, delivered to the event loop in order.

    Set up before the job is submitted, so nothing is missed: ``("selection", SelectionMap)``,
    ``("text", str)`` pieces, then ``("done", future)``.
    """

    def __init__(self, job: AnswerJob) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        job.on_selection = lambda selection: self._emit("selection", selection)
        job.on_text = lambda text: self._emit("text", text)
        job.future.add_done_callback(lambda future: self._emit("done", future))

    def _emit(self, kind: str, value: Any) -> None:  # called from the worker thread
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop has closed: nobody listens any more
            pass

    async def next(self, timeout: float) -> tuple[str, Any]:
        return await asyncio.wait_for(self.queue.get(), timeout=max(timeout, 0.0))


async def _stream(
    job: AnswerJob, events: AnswerEvents, chat_request: ChatCompletionRequest, runtime: Runtime, encoding: VideoEncoding
) -> AsyncIterator[str]:
    """SSE events of one answer; whatever ends the stream early (a disconnect included) cancels the job."""
    base = {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "created": int(time.time()),
        "model": runtime.settings.model_name,
    }

    def chunk(delta: Delta, finish: str | None = None, **fields: Any) -> str:
        return ChatCompletionChunk(**base, choices=[ChunkChoice(delta=delta, finish_reason=finish)], **fields).sse()

    try:
        yield chunk(Delta(role="assistant", content=""))
        while True:
            try:
                kind, value = await events.next(job.deadline + 5.0 - time.monotonic())
            except asyncio.TimeoutError:
                yield _error_event(_timeout(runtime, "while answering"))
                break
            if kind == "selection":
                yield chunk(Delta(), recot={"selection": value.model_dump(mode="json")})
            elif kind == "text":
                yield chunk(Delta(content=value))
            elif value.exception() is not None:
                yield _error_event(as_api_error(value.exception(), runtime))
                break
            else:
                result: AnswerResult = value.result()
                if result.timed_out:
                    yield _error_event(_timeout(runtime, "while answering"))
                    break
                reason = finish_reason(result.answer, runtime.chat.processor.stop_token_ids, job.options.max_new_tokens)
                info = _recot_info(result, encoding, selection=False).model_dump(mode="json", exclude_none=True)
                yield chunk(Delta(), reason, recot=info)
                if chat_request.stream_options is not None and chat_request.stream_options.include_usage:
                    yield ChatCompletionChunk(**base, choices=[], usage=_usage(result)).sse()
                break
        yield "data: [DONE]\n\n"
    finally:
        if not job.future.done():
            job.cancelled.set()


def _error_event(error: APIError) -> str:
    return f"data: {json.dumps(error.body())}\n\n"
