"""The Video-XL-Pro model: vision tower, ReCoT compressor, selector, LLM, checkpoints."""

from recot.model.checkpoint import CheckpointError
from recot.model.compressor import ReCoTCompressor
from recot.model.processor import VideoXLProProcessor
from recot.model.selector import QueryAwareSelector
from recot.model.videoxl_pro import EncodedVideo, VideoXLPro, group_frame_order

__all__ = [
    "CheckpointError",
    "EncodedVideo",
    "QueryAwareSelector",
    "ReCoTCompressor",
    "VideoXLPro",
    "VideoXLProProcessor",
    "group_frame_order",
]
