"""Long-video inference: streaming encoder, encode-once cache, ``VideoChat`` and memory planning.

``VideoChat`` loads a model once; ``encode(video)`` streams the video through
the vision tower and compressor in bounded memory (``recot.model.StreamingEncoder``) and caches the compressed
tokens on disk; ``ask(video, question)`` runs the query-aware selector and the
language model on them. The names below are imported on first use.
"""

from typing import TYPE_CHECKING

from recot._lazy import lazy_package

lazy_package(
    __name__,
    {
        "Answer": "recot.engine.chat",
        "BeyondContextWarning": "recot.engine.chat",
        "CacheCorruptWarning": "recot.engine.cache",
        "EncodingCache": "recot.engine.cache",
        "FrameGapFiller": "recot.engine.chat",
        "FrameSampling": "recot.engine.chat",
        "GenerationOptions": "recot.engine.chat",
        "Timings": "recot.engine.chat",
        "VideoChat": "recot.engine.chat",
        "VideoEncoding": "recot.engine.chat",
        "default_model_dir": "recot.engine.default_model",
        "resolve_cache_dir": "recot.engine.cache",
        "resolve_model": "recot.engine.default_model",
    },
)

if TYPE_CHECKING:  # for type checkers and editors
    from recot.engine.cache import CacheCorruptWarning, EncodingCache, resolve_cache_dir
    from recot.engine.chat import (
        Answer,
        BeyondContextWarning,
        FrameGapFiller,
        FrameSampling,
        GenerationOptions,
        Timings,
        VideoChat,
        VideoEncoding,
    )
    from recot.engine.default_model import default_model_dir, resolve_model

__all__ = [
    "Answer",
    "BeyondContextWarning",
    "CacheCorruptWarning",
    "EncodingCache",
    "FrameGapFiller",
    "FrameSampling",
    "GenerationOptions",
    "Timings",
    "VideoChat",
    "VideoEncoding",
    "default_model_dir",
    "resolve_cache_dir",
    "resolve_model",
]
