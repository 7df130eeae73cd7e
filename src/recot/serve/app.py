"""The FastAPI application: routes, API-key check, error shapes, metrics and the web page.

``create_app(chat, settings)`` builds an app around one loaded
:class:`recot.engine.VideoChat`; uvicorn serves it (``recot serve``). Routes:

    GET  /                              the web page (static/index.html)
    GET  /health                        liveness and queue depth (no key needed)
    GET  /metrics                       Prometheus text
    GET  /v1/models                     the served model
    POST /v1/chat/completions           answer a question about a video (JSON or SSE)
    POST /v1/videos                     upload a video (multipart, field "file"); encoded in the background
    GET  /v1/videos                     uploaded videos, newest first
    GET  /v1/videos/{id}                one video, with encoding progress
    GET  /v1/videos/{id}/thumbnails     its thumbnail strip (JPEG)
    DELETE /v1/videos/{id}              remove it and its cached encoding
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from recot.engine import VideoChat
from recot.serve.completions import create_chat_completion
from recot.serve.errors import APIError, install_error_handlers, validation_message
from recot.serve.metrics import CONTENT_TYPE, Metrics, MetricsMiddleware
from recot.serve.runtime import Runtime
from recot.serve.schemas import Health, ModelCard, ModelList, SamplingRequest, VideoDeleted, VideoList, VideoObject
from recot.serve.settings import ServeSettings

STATIC_DIR = Path(str(resources.files("recot.serve") / "static"))


def create_app(chat: VideoChat, settings: ServeSettings) -> FastAPI:
    """The HTTP app serving ``chat``'s model under ``settings`` (the worker starts with the app)."""
    metrics = Metrics()
    runtime = Runtime(chat, settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="recot", summary="Video-XL-Pro behind an OpenAI-compatible API", lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)  # fmt: skip
    app.state.runtime = runtime
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    authorized = Depends(_key_checker(settings.api_key))
    created = int(time.time())

    # ----- page, health, metrics ----------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    async def health() -> Health:
        status = "stopping" if runtime.stopping else "ok"
        return Health(status=status, model=settings.model_name, queue=runtime.worker.depth(),
                      uptime_seconds=round(time.time() - runtime.started_at, 3))  # fmt: skip

    @app.get("/metrics", dependencies=[authorized])
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # ----- OpenAI-compatible ----------------------------------------------------------------
    @app.get("/v1/models", dependencies=[authorized])
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=settings.model_name, created=created)])

    @app.post("/v1/chat/completions", dependencies=[authorized])
    async def chat_completions(request: Request) -> Response:
        return await create_chat_completion(request, runtime)

    # ----- videos ---------------------------------------------------------------------------
    @app.post("/v1/videos", dependencies=[authorized])
    async def upload(request: Request) -> VideoObject:
        release = runtime.reserve_encode()  # 429 before a byte of the body is read
        try:
            record, path, fields = await runtime.store.receive(request, settings.max_upload_bytes)
            try:
                asked = SamplingRequest.model_validate(fields)
            except ValidationError as exc:
                path.unlink(missing_ok=True)
                message, param = validation_message(exc.errors())
                raise APIError(400, message, param=param, code="invalid_parameter") from exc
        except BaseException:
            release()
            raise
        return await runtime.accept_upload(record, path, asked, release)

    @app.get("/v1/videos", dependencies=[authorized])
    async def list_videos() -> VideoList:
        return VideoList(data=[runtime.upload_view(r) for r in runtime.store.all()])

    @app.get("/v1/videos/{video_id}", dependencies=[authorized])
    async def get_video(video_id: str) -> VideoObject:
        return runtime.upload_view(runtime.store.require(video_id))

    @app.get("/v1/videos/{video_id}/thumbnails", dependencies=[authorized])
    async def thumbnails(video_id: str) -> FileResponse:
        runtime.store.require(video_id)
        path = runtime.store.thumbs_path(video_id)
        if not path.is_file():
            raise APIError(404, f"video {video_id} has no thumbnails yet", param="video_id", code="no_thumbnails")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.delete("/v1/videos/{video_id}", dependencies=[authorized])
    async def delete_video(video_id: str) -> VideoDeleted:
        runtime.delete_upload(video_id)
        return VideoDeleted(id=video_id)

    return app


def _key_checker(api_key: str | None):
    """A dependency that accepts ``Authorization: Bearer KEY`` (compared in constant time) when a key is set."""
    expected = api_key.encode() if api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            raise APIError(401, "missing API key: send the header 'Authorization: Bearer KEY'", code="missing_api_key",
                           headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise APIError(401, "invalid API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return check


__all__ = ["create_app"]
