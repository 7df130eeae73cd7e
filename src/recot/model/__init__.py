"""The Video-XL-Pro model: vision tower, ReCoT compressor, selector, LLM, checkpoints."""

from recot.model.checkpoint import CheckpointError
from recot.model.compressor import ReCoTCompressor
from recot.model.encoder import EncodedVideo, EncoderStages, FrameCountError, StreamingEncoder
from recot.model.groups import GroupPlan, group_frame_order
from recot.model.processor import VideoXLProProcessor
from recot.model.selector import QueryAwareSelector
from recot.model.videoxl_pro import LLMInputs, VideoXLPro, VideoXLProIntermediates, VideoXLProOutput

__all__ = [
    "CheckpointError",
    "EncodedVideo",
    "EncoderStages",
    "FrameCountError",
    "GroupPlan",
    "LLMInputs",
    "QueryAwareSelector",
    "ReCoTCompressor",
    "StreamingEncoder",
    "VideoXLPro",
    "VideoXLProIntermediates",
    "VideoXLProOutput",
    "VideoXLProProcessor",
    "group_frame_order",
]
