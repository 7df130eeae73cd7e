"""Serving: an OpenAI-compatible HTTP API with video input, a web page, and one worker that owns the model.

``recot serve --model DIR`` runs :func:`create_app` under uvicorn; in Python::

    from recot.serve import ServeSettings, create_app
    app = create_app(VideoChat.from_pretrained(path, cache=EncodingCache()), ServeSettings(upload_dir=...))

Modules: ``app`` (routes), ``completions`` (chat requests, SSE), ``worker``
(the model's thread: answers first, encodes between), ``encoding`` (chunked
encode), ``generation`` (token streaming, early stop), ``selection`` (the
selector heatmap), ``media`` (URLs and path security), ``uploads``,
``runtime`` (admission, encodings), ``metrics``, ``schemas``, ``settings``.
"""

from typing import TYPE_CHECKING

from recot._lazy import lazy_package

# Imported on first use: ``recot --help`` imports this package, and FastAPI is an optional extra.
lazy_package(__name__, {"ServeSettings": "recot.serve.settings", "create_app": "recot.serve.app"})

if TYPE_CHECKING:  # for type checkers and editors
    from recot.serve.app import create_app
    from recot.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
