"""``recot serve``: the model behind an OpenAI-compatible HTTP API, with a web page at ``/``.

``recot serve --model DIR`` loads the model once and serves it on
http://127.0.0.1:8000 (uvicorn). Local video paths are off unless
``--media-dir`` names the only folder they may come from; remote URLs are
refused unless ``--allow-remote-media``. With ``--api-key`` (or
``$RECOT_API_KEY``) every /v1 request and /metrics need ``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recot.engine.cache import EncodingCache
    from recot.serve.settings import ServeSettings

API_KEY_ENV = "RECOT_API_KEY"


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``recot`` command."""
    serve = subparsers.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API, with a web page", description=__doc__.replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    model = serve.add_argument_group("model")
    model.add_argument("--model", type=Path, help="checkpoint directory (default: the default model, trained on synthetic QA only)")
    model.add_argument("--served-model-name", help="the id clients pass as 'model' (default: the directory's name)")
    model.add_argument("--dtype", help="float32 (default), bfloat16 or float16")
    model.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    model.add_argument(
        "--cache-dir", type=Path, help="encode cache root (default: $RECOT_CACHE_DIR or the user cache dir)"
    )
    model.add_argument("--cache-size", help="encode cache size limit, e.g. 20GB (default: $RECOT_CACHE_SIZE or 20GB)")

    net = serve.add_argument_group("network and security")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    net.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    net.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; none: open)")
    net.add_argument(
        "--media-dir", type=Path, help="the only folder local video paths may be read from (default: none)"
    )
    net.add_argument("--allow-remote-media", action="store_true", help="fetch http(s) video URLs (default: refused)")
    net.add_argument("--upload-dir", type=Path, help="where uploads are stored (default: CACHE_DIR/serve/uploads)")

    limits = serve.add_argument_group("limits")
    limits.add_argument("--max-upload-bytes", default="2GB", help="largest upload or data: URL video (default: 2GB)")
    limits.add_argument(
        "--max-queue", type=int, default=32, help="chat requests admitted at once; more get 429 (default: 32)"
    )
    limits.add_argument(
        "--max-encode-queue", type=int, default=8, help="videos waiting to be encoded; more get 429 (default: 8)"
    )
    limits.add_argument(
        "--request-timeout", type=float, default=600.0, help="seconds a chat request may take (default: 600)"
    )
    limits.add_argument("--max-frames", type=int, default=4096, help="most frames sampled from a video (default: 4096)")
    limits.add_argument("--fps", type=float, default=1.0, help="frames a second sampled by default (default: 1)")
    limits.add_argument(
        "--max-new-tokens", type=int, default=1024, help="largest max_tokens a request may ask (default: 1024)"
    )
    limits.add_argument("--memory-cache", default="2GB", help="encoded videos kept in memory (default: 2GB)")
    serve.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"), help="uvicorn's log level"
    )
    serve.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """``recot serve``: check the options, load the model, listen, serve until interrupted."""
    from pydantic import ValidationError

    from recot.cli import report_error
    from recot.engine.cache import EncodingCache, parse_size, resolve_cache_dir
    from recot.serve.settings import ServeSettings

    if args.media_dir is not None and not args.media_dir.is_dir():
        return report_error("serve", f"--media-dir {args.media_dir} is not a directory", 2)
    if args.model is not None and not args.model.is_dir():
        return report_error("serve", f"--model {args.model} is not a directory", 1)
    if not 0 <= args.port <= 65535:
        return report_error("serve", f"--port {args.port} is not a port number (0-65535)", 2)
    try:
        upload_bytes = parse_size(args.max_upload_bytes)
        memory_bytes = parse_size(args.memory_cache)
        cache = EncodingCache(args.cache_dir, args.cache_size)
    except ValueError as exc:
        return report_error("serve", str(exc), 2)
    upload_dir = args.upload_dir or resolve_cache_dir(args.cache_dir) / "serve" / "uploads"
    try:
        settings = ServeSettings(
            model_name=args.served_model_name or (args.model.resolve().name if args.model else "recot-default"),
            api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, upload_dir=upload_dir,
            media_dir=args.media_dir, allow_remote_media=args.allow_remote_media, max_upload_bytes=upload_bytes,
            max_queue=args.max_queue, max_encode_queue=args.max_encode_queue, request_timeout=args.request_timeout,
            max_frames=args.max_frames, default_fps=args.fps, max_new_tokens=args.max_new_tokens,
            memory_cache_bytes=memory_bytes,
        )  # fmt: skip
    except ValidationError as exc:
        error = exc.errors()[0]
        flag = "--" + str(error["loc"][0]).replace("_", "-")
        return report_error("serve", f"{flag}: {error['msg']}", 2)
    try:
        listener = _listen(args.host, args.port)
    except OSError as exc:
        return report_error("serve", f"cannot listen on {args.host}:{args.port} (--host/--port): {exc.strerror or exc}")
    with listener:
        return _serve(args, settings, cache, listener)


def _serve(args: argparse.Namespace, settings: ServeSettings, cache: EncodingCache, listener: socket.socket) -> int:
    """Load the model and run uvicorn on ``listener`` until interrupted."""
    import uvicorn

    from recot.cli import report_error
    from recot.engine import VideoChat, default_model_dir
    from recot.model.checkpoint import CheckpointError
    from recot.serve.app import create_app

    try:
        settings.upload_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return report_error("serve", f"cannot create --upload-dir {settings.upload_dir}: {exc.strerror or exc}")
    model_dir = args.model if args.model is not None else default_model_dir(args.cache_dir)
    try:
        chat = VideoChat.from_pretrained(model_dir, dtype=args.dtype, device=args.device, cache=cache)
    except (CheckpointError, ValueError, RuntimeError) as exc:
        return report_error("serve", f"cannot load the model: {exc}")
    host, port = listener.getsockname()[:2]
    if not _is_loopback(args.host) and settings.api_key is None:
        print(f"recot serve: warning: listening on {args.host} without --api-key: anyone who can reach it may use it",
              file=sys.stderr)  # fmt: skip
    url_host = f"[{host}]" if ":" in host else host
    print(
        f"recot serve: {settings.model_name} on http://{url_host}:{port} (page at /, API at /v1)",
        file=sys.stderr,
        flush=True,
    )
    app = create_app(chat, settings)
    config = uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again
        pass
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket (so a busy port is a clean error, and port 0 can be reported)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
