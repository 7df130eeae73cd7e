"""Long-video inference: streaming encoder, encode-once cache, ``VideoChat`` and memory planning.

``VideoChat`` loads a model once; ``encode(video)`` streams the video through
the vision tower and compressor in bounded memory and caches the compressed
tokens on disk; ``ask(video, question)`` runs the query-aware selector and the
language model on them. The names below are imported on first use.
"""

from typing import TYPE_CHECKING

from recot._lazy import lazy_package

lazy_package(
    __name__,
    {
        "Answer": "recot.engine.chat",
        "CacheCorruptWarning": "recot.engine.cache",
        "EncodingCache": "recot.engine.cache",
        "FrameSampling": "recot.engine.chat",
        "GenerationOptions": "recot.engine.chat",
        "StreamingEncoder": "recot.engine.stream",
        "Timings": "recot.engine.chat",
        "VideoChat": "recot.engine.chat",
        "VideoEncoding": "recot.engine.chat",
        "default_model_dir": "recot.engine.default_model",
        "encode_stream": "recot.engine.stream",
        "resolve_cache_dir": "recot.engine.cache",
        "resolve_model": "recot.engine.default_model",
    },
)

if TYPE_CHECKING:  # for type checkers and editors
    from recot.engine.cache import CacheCorruptWarning, EncodingCache, resolve_cache_dir
    from recot.engine.chat import Answer, FrameSampling, GenerationOptions, Timings, VideoChat, VideoEncoding
    from recot.engine.default_model import default_model_dir, resolve_model
    from recot.engine.stream import StreamingEncoder, encode_stream

__all__ = [
    "Answer",
    "CacheCorruptWarning",
    "EncodingCache",
    "FrameSampling",
    "GenerationOptions",
    "StreamingEncoder",
    "Timings",
    "VideoChat",
    "VideoEncoding",
    "default_model_dir",
    "encode_stream",
    "resolve_cache_dir",
    "resolve_model",
]
