"""Request and response records of the HTTP API (pydantic), in OpenAI's shapes where OpenAI has one.

Chat requests follow ``POST /v1/chat/completions``: messages whose content is
a string or a list of ``text``, ``video_url`` and ``image_url`` parts, plus
recot's own options (``frames``, ``fps``, ``max_frames``, ``start``, ``end``,
``keep_ratio``, ``max_visual_tokens``) as extra body fields. OpenAI fields
recot cannot honour (``n > 1``, ``stop``, ``tools``, penalties, ``logprobs``)
are refused with a message rather than silently ignored; unknown fields are
refused too, so a misspelt option is an error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


# ----- chat requests ---------------------------------------------------------------
class MediaURL(BaseModel):
    """``{"url": ...}``: ``data:`` URL, ``recot-video://ID``, a path under ``--media-dir``, or http(s)."""

    model_config = ConfigDict(extra="ignore")  # OpenAI's image ``detail`` has no meaning here

    url: str


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class VideoPart(BaseModel):
    type: Literal["video_url"]
    video_url: MediaURL


class ImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: MediaURL


ContentPart = Annotated[TextPart | VideoPart | ImagePart, Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")  # ``name`` and the like

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions``."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None

    # OpenAI fields accepted only with their neutral value.
    n: int = 1
    stop: str | list[str] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    # OpenAI bookkeeping fields, accepted and ignored.
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None

    # recot: which frames to encode and how many visual tokens to keep.
    frames: int | None = Field(None, ge=1, description="sample N frames uniformly")
    fps: float | None = Field(None, gt=0.0, description="sample F frames a second")
    max_frames: int | None = Field(None, ge=1, description="cap on the frames sampled")
    start: float | None = Field(None, ge=0.0, description="first second of the video to use")
    end: float | None = Field(None, gt=0.0, description="last second of the video to use")
    keep_ratio: float | None = Field(None, gt=0.0, le=1.0, description="share of visual tokens the selector keeps")
    max_visual_tokens: Annotated[int, Field(ge=1)] | Literal["all"] | None = Field(
        None, description="most visual tokens the LLM may see ('all': keep_ratio of every one, past the context)"
    )

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError(f"only n=1 is supported, got {value}")
        return value

    @field_validator("stop", "tools", "logit_bias")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        if value:
            raise ValueError("is not supported by recot; leave it out")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0:
            raise ValueError("penalties are not supported by recot; leave it out or use 0")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool) -> bool:
        if value:
            raise ValueError("logprobs are not supported by recot")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise ValueError("logprobs are not supported by recot")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _no_tools(cls, value: Any) -> Any:
        if value not in (None, "none"):
            raise ValueError("tools are not supported by recot")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError(f"only the text response format is supported, got {value.get('type')!r}")
        return value


# ----- chat responses -----------------------------------------------------------------
class Usage(BaseModel):
    """Tokens: ``prompt_tokens`` is everything the LLM read (text, timestamps and the kept visual tokens)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    visual_tokens: int = Field(description="visual tokens of the encoded video (seen by the selector)")
    visual_tokens_kept: int = Field(description="visual tokens the selector kept for the LLM")


class SelectionMap(BaseModel):
    """Where the answer came from: the selector's scores per frame group and what it kept.

    ``scores[g]`` is the mean score (in [0, 1]) of group ``g``'s visual tokens,
    ``kept[g]`` how many of its ``tokens_per_group`` tokens the LLM saw, and
    ``timestamps[g]`` the time in seconds of the group's first frame.
    """

    groups: int
    tokens_per_group: int
    timestamps: list[float]
    scores: list[float]
    kept: list[int]


class RecotInfo(BaseModel):
    """recot's extra response field: what was encoded, where the time went, and the selection."""

    frames: int
    groups: int
    cache_hit: bool
    encode_seconds: float
    answer_seconds: float
    selection: SelectionMap | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    recot: RecotInfo


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    """One Server-Sent Event of a streamed answer (``data: {...}``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    recot: dict[str, Any] | None = None  # {"selection": ...} early in the stream, RecotInfo figures at the end

    def sse(self) -> str:
        """The event text; ``usage`` and ``recot`` appear only when set, as in OpenAI's stream."""
        body = self.model_dump_json(exclude={k for k in ("usage", "recot") if getattr(self, k) is None})
        return f"data: {body}\n\n"


# ----- models ----------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "recot"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ----- videos ------------------------------------------------------------------------------
VideoStatus = Literal["queued", "encoding", "ready", "failed"]


class Thumbnails(BaseModel):
    """A strip of ``count`` thumbnails side by side (one JPEG at ``url``), taken at ``times`` seconds."""

    count: int
    width: int
    height: int
    times: list[float]
    url: str


class VideoError(BaseModel):
    message: str
    code: str | None = None


class SamplingRequest(BaseModel):
    """Which frames to encode, as asked (``None``: the server's default, 1 frame a second up to ``--max-frames``)."""

    model_config = ConfigDict(extra="forbid")

    frames: int | None = Field(None, ge=1)
    fps: float | None = Field(None, gt=0.0)
    max_frames: int | None = Field(None, ge=1)
    start: float | None = Field(None, ge=0.0)
    end: float | None = Field(None, gt=0.0)


class VideoObject(BaseModel):
    """An uploaded video: ``GET /v1/videos/{id}``. ``progress`` runs from 0 to 1 while encoding."""

    id: str
    object: Literal["video"] = "video"
    filename: str
    bytes: int
    created_at: int
    status: VideoStatus = "queued"
    progress: float = 0.0
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    groups: int | None = None
    sampling: SamplingRequest = Field(default_factory=SamplingRequest)
    sampling_rule: str | None = None
    encode_seconds: float | None = None
    thumbnails: Thumbnails | None = None
    error: VideoError | None = None
    url: str = ""

    def model_post_init(self, context: Any) -> None:
        if not self.url:
            self.url = f"recot-video://{self.id}"


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


class Health(BaseModel):
    status: Literal["ok", "starting", "stopping"]
    model: str
    queue: dict[str, int]
    uptime_seconds: float
