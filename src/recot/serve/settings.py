"""What a ``recot serve`` process is allowed to do: limits, security switches and defaults.

One :class:`ServeSettings` is built from the command line (``recot serve``) or
directly in Python and handed to :func:`recot.serve.create_app`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ServeSettings(BaseModel):
    """Limits and switches of one server (every field has a command-line flag of the same name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = Field("recot", description="the id clients pass as `model` and /v1/models lists")
    api_key: str | None = Field(None, description="when set, every /v1 and /metrics request needs `Bearer KEY`")
    upload_dir: Path = Field(description="where uploaded videos are stored under server-chosen names")
    media_dir: Path | None = Field(None, description="local paths are read only under this folder (None: never)")
    allow_remote_media: bool = Field(False, description="fetch http(s) video URLs (off: refused)")
    max_upload_bytes: int = Field(2 * 1024**3, gt=0, description="largest upload, data: URL or remote video")
    max_queue: int = Field(32, gt=0, description="chat requests admitted at once (queued or running); more get 429")
    max_encode_queue: int = Field(8, gt=0, description="videos waiting for or being encoded; more get 429")
    request_timeout: float = Field(600.0, gt=0, description="seconds a chat request may take in all")
    max_frames: int = Field(4096, gt=0, description="most frames sampled from one video")
    default_fps: float = Field(1.0, gt=0, description="frames a second sampled when a request says nothing")
    max_new_tokens: int = Field(1024, gt=0, description="largest max_tokens a request may ask for")
    default_max_tokens: int = Field(256, gt=0, description="max_tokens when a request says nothing")
    thumbnails: int = Field(16, ge=0, le=64, description="thumbnails in an uploaded video's timeline strip")
    memory_cache_bytes: int = Field(2 * 1024**3, ge=0, description="encoded videos kept in memory (LRU)")
    remote_timeout: float = Field(30.0, gt=0, description="seconds allowed to fetch a remote video")
