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

from recot.serve.app import create_app
from recot.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
