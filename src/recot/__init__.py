"""recot: Video-XL-Pro (reconstructive token compression) for extremely long videos.

The public names below load on first use (PEP 562), so ``import recot`` and the
light sub-packages (``recot.video`` probing, ``recot.cli``) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from recot.config import VideoXLProConfig
    from recot.engine import Answer, FrameSampling, GenerationOptions, VideoChat
    from recot.model import CheckpointError, EncodedVideo, VideoXLPro, VideoXLProProcessor

# Public name -> the module that defines it.
_LAZY = {
    "Answer": "recot.engine",
    "CheckpointError": "recot.model",
    "EncodedVideo": "recot.model",
    "FrameSampling": "recot.engine",
    "GenerationOptions": "recot.engine",
    "VideoChat": "recot.engine",
    "VideoXLPro": "recot.model",
    "VideoXLProConfig": "recot.config",
    "VideoXLProProcessor": "recot.model",
}

__all__ = [
    "Answer",
    "CheckpointError",
    "EncodedVideo",
    "FrameSampling",
    "GenerationOptions",
    "VideoChat",
    "VideoXLPro",
    "VideoXLProConfig",
    "VideoXLProProcessor",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
