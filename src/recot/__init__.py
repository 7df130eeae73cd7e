"""recot: Video-XL-Pro (reconstructive token compression) for extremely long videos."""

__version__ = "0.1.0"

from recot.config import VideoXLProConfig  # noqa: E402
from recot.engine import Answer, FrameSampling, GenerationOptions, VideoChat  # noqa: E402
from recot.model import (  # noqa: E402
    CheckpointError,
    EncodedVideo,
    VideoXLPro,
    VideoXLProProcessor,
)

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
