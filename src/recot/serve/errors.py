"""Errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}`` with a fitting status.

Handlers turn every failure a client can cause into one of these, so bad input
never surfaces as a 500 with a traceback; unexpected failures become a 500
whose message names no internals (the traceback goes to the server log).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("recot.serve")

#: OpenAI's error ``type`` for each status code recot uses.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class APIError(Exception):
    """A failure to report to the client: HTTP ``status``, a one-line ``message``, optional ``param`` and ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {...}}``."""
        kind = ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def too_large(what: str, limit: int, param: str | None = None) -> APIError:
    """413 for an upload, data: URL, remote video or body over the server's byte limit."""
    flag = "" if what == "the request body" else " (--max-upload-bytes)"
    return APIError(
        413, f"{what} is larger than the server's limit of {limit} bytes{flag}", param=param, code="too_large"
    )


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One line for pydantic's errors and the parameter it concerns (``messages.0.content.1.type``).

    Of the errors of a union (a string or a list of parts), the one that went
    deepest is the one that says what is wrong; pydantic's names of the union's
    branches (``str``, ``list[...]``) are left out of the parameter path.
    """
    first = max(errors, key=lambda e: len(e.get("loc", ())))
    loc = [str(part) for part in first.get("loc", ()) if part != "body" and not _is_branch_name(part)]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return f"unknown parameter {param!r}", param
    if first.get("type") == "missing":
        return f"missing parameter {param!r}", param
    message = first.get("msg", "invalid value")
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return (f"{param}: {message}" if param else message), param


def _is_branch_name(part: object) -> bool:
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool", "list", "dict", "none"})


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the OpenAI shape."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        return APIError(400, message, param=param, code="invalid_parameter").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return APIError(exc.status_code, message, headers=dict(exc.headers or {})).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error while serving %s %s", request.method, request.url.path)
        return APIError(500, f"internal server error ({type(exc).__name__}); see the server log").response()
