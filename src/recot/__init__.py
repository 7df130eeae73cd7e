"""recot: Video-XL-Pro (reconstructive token compression) for extremely long videos."""

__version__ = "0.1.0"

from recot.config import VideoXLProConfig  # noqa: E402

__all__ = ["VideoXLProConfig", "__version__"]
