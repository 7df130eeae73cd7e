"""recot: Video-XL-Pro (reconstructive token compression) for extremely long videos.

The public names are imported on first use, so ``import recot`` and
``recot --version`` do not load torch or transformers.
"""

from typing import TYPE_CHECKING

from recot._lazy import lazy_package

__version__ = "0.1.0"

lazy_package(
    __name__,
    {
        "Answer": "recot.engine.chat",
        "CheckpointError": "recot.model.checkpoint",
        "EncodedVideo": "recot.model.encoder",
        "FrameSampling": "recot.engine.chat",
        "GenerationOptions": "recot.engine.chat",
        "VideoChat": "recot.engine.chat",
        "VideoXLPro": "recot.model.videoxl_pro",
        "VideoXLProConfig": "recot.config",
        "VideoXLProProcessor": "recot.model.processor",
    },
)

if TYPE_CHECKING:  # for type checkers and editors
    from recot.config import VideoXLProConfig
    from recot.engine.chat import Answer, FrameSampling, GenerationOptions, VideoChat
    from recot.model.checkpoint import CheckpointError
    from recot.model.encoder import EncodedVideo
    from recot.model.processor import VideoXLProProcessor
    from recot.model.videoxl_pro import VideoXLPro

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

