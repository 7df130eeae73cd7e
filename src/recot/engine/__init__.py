"""Long-video inference: streaming encoder, encode-once cache, ``VideoChat`` and memory planning.

``VideoChat`` loads a model once; ``encode(video)`` streams the video through
the vision tower and compressor in bounded memory (``recot.model.StreamingEncoder``) and caches the compressed
tokens on disk; ``ask(video, question)`` runs the query-aware selector and the
language model on them.
"""

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
from recot.engine.default_model import default_model_dir

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
]
