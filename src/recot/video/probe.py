"""Open a video, a still image or a directory of frames and describe it.

``probe`` reads the container header and, by default, builds a frame index by
demuxing every packet of the video stream (no decoding, a few seconds for an
hour of video). The index gives the exact frame count, every frame's true
presentation time and the keyframes, which the sampler and the seeking
decoder rely on.

Frame ``i`` is the ``i``-th frame a plain sequential decode of the file
outputs (display order). Most containers store each frame's presentation time,
so the decoder can find frame ``i`` by its pts after a seek. AVI stores decode
order only: FFmpeg guesses the pts, which follow display order for MPEG-1/2
and MPEG-4 Part 2 B-frames but not for H.264/HEVC ones; DivX-style "packed
B-frames" (a B-frame stored in the packet of the frame before it, in any
container) scramble them too. For such streams ``VideoInfo.sequential_only``
is set and the decoder numbers frames by decoding from the start; the frame
times are still the sorted pts, which are the right set of display slots.

Times: ``start_time`` is the container's start in seconds; every frame time
(``frame_times``, plan and batch timestamps) is seconds since that start, so a
clip cut from a broadcast stream at 3600 s still starts at 0.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from recot.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    PartialDecodeWarning,
    UnsupportedVideoError,
    VideoNotFoundError,
)

# File suffixes read as still images (with PIL) rather than as videos, lower case.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# Larger than any real camera or screen recording; beyond this a frame alone is gigabytes.
MAX_SIDE = 16384
# Seconds FFmpeg may wait on opening / on one read before giving up (stalled network mounts, FIFOs).
IO_TIMEOUT = (30.0, 30.0)
# Frame rate given to a directory of frames, which has no timing of its own.
FRAMES_DIR_FPS = 1.0
# Containers that store decode times only; FFmpeg guesses presentation times for their packets.
DECODE_ORDER_FORMATS = frozenset({"avi"})
# Codecs whose B-frames FFmpeg's guesses do put in display order (one frame of reorder delay, picture types
# read by its parser), unless the B-frames are packed; H.264/HEVC's guesses are plain decode order.
PARSER_ORDERED_CODECS = frozenset({"mpeg1video", "mpeg2video", "mpeg4"})
# The DivX user data that marks packed B-frames, read the way FFmpeg's MPEG-4 decoder reads it.
_DIVX_PACKED = re.compile(rb"DivX\d+(?:Build|b)\d+p")

Kind = Literal["video", "image", "frames"]


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` found. ``width``/``height`` are the displayed size (rotation applied).

    ``num_frames_exact`` is true when frames were counted (index built or an
    image/directory) and false when the count is the container's declared
    number or ``duration * avg_fps``. ``sequential_only`` is true when the
    stream's pts do not follow display order (H.264/HEVC B-frames in AVI, packed
    B-frames; see the module docstring): the decoder then numbers frames by
    decoding from the start instead of seeking.
    """

    path: str
    kind: Kind
    codec: str
    width: int
    height: int
    rotation: int
    duration: float
    avg_fps: float
    num_frames: int
    num_frames_exact: bool
    start_time: float = 0.0
    frame_times: np.ndarray | None = field(default=None, repr=False, compare=False)
    keyframes: np.ndarray | None = field(default=None, repr=False, compare=False)
    frame_pts: np.ndarray | None = field(default=None, repr=False, compare=False)
    time_base: Fraction | None = field(default=None, repr=False)
    frame_files: tuple[str, ...] = field(default=(), repr=False, compare=False)
    stream_index: int | None = field(default=None, repr=False)  # the decoded video stream (videos only)
    has_b_frames: bool = field(default=False, repr=False)  # the codec reorders frames (B-frames)
    sequential_only: bool = field(default=False, repr=False)

    @property
    def is_image(self) -> bool:
        """True for a single still image read as a one-frame video."""
        return self.kind == "image"

    @property
    def indexed(self) -> bool:
        """True when every frame's presentation time is known (needed to plan and decode)."""
        return self.frame_times is not None

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields, JSON-ready."""
        return {
            "path": self.path,
            "kind": self.kind,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "duration": self.duration,
            "avg_fps": self.avg_fps,
            "num_frames": self.num_frames,
            "num_frames_exact": self.num_frames_exact,
            "start_time": self.start_time,
            "num_keyframes": None if self.keyframes is None else len(self.keyframes),
            "sequential_only": self.sequential_only,
        }


def probe(path: str | Path, *, index: bool = True) -> VideoInfo:
    """Describe a video file, a still image or a directory of frame images.

    With ``index=True`` (needed by ``plan_frames``) every packet is demuxed to
    count frames and record their times and keyframes; ``index=False`` reads
    only the header and the first frame.

    Raises a ``VideoDecodeError`` subclass naming the file and the cause.
    """
    path = Path(path)
    if not path.exists():
        raise VideoNotFoundError(path, "no such file or directory")
    if path.is_dir():
        return _probe_frames_dir(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return _probe_image(path)
    return _probe_video(path, index=index)


def open_container(path: str | Path) -> av.container.InputContainer:
    """Open ``path`` with PyAV, turning FFmpeg's failures into ``VideoDecodeError``."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise EmptyVideoError(path, "the file is empty (0 bytes)")
    try:
        return av.open(str(path), timeout=IO_TIMEOUT, metadata_errors="replace")
    except av.error.EOFError as e:
        raise EmptyVideoError(path, "the file ends before its first frame (it holds a header and no data)") from e
    except FileNotFoundError as e:
        raise VideoNotFoundError(path, "no such file") from e
    except IsADirectoryError as e:
        raise NotAVideoError(path, "is a directory") from e
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise NotAVideoError(path, f"FFmpeg cannot read it as a video ({ffmpeg_reason(e)}); "
                             "it is not a media file, or its header is missing or truncated") from e


def video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    """The first real video stream (cover art in audio files does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["no streams"]
    raise NoVideoStreamError(path, f"has no video stream (found: {', '.join(kinds)})")


def check_size(path: str | Path, width: int, height: int) -> None:
    """Reject zero or absurd frame sizes before any frame is allocated."""
    if width <= 0 or height <= 0:
        raise UnsupportedVideoError(path, f"invalid frame size {width}x{height}")
    if max(width, height) > MAX_SIDE:
        raise UnsupportedVideoError(path, f"frame size {width}x{height} exceeds the {MAX_SIDE}-pixel limit")


def ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's own words for a PyAV error ("Invalid data found when processing input"), without the errno."""
    return getattr(error, "strerror", None) or str(error)


def _probe_video(path: Path, *, index: bool) -> VideoInfo:
    with open_container(path) as container:
        stream = video_stream(container, path)
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None:
            raise UnsupportedVideoError(path, "no decoder for its video codec in this FFmpeg build")
        codec = ctx.codec.canonical_name
        check_size(path, ctx.width, ctx.height)
        tb = stream.time_base or Fraction(1, 90000)
        stream_index, has_b_frames = stream.index, bool(ctx.has_b_frames)
        decode_order_only = container.format.name in DECODE_ORDER_FORMATS
        extradata = ctx.extradata or b""
        start = _start_time(container, stream, tb)
        packets = _scan_packets(path, container, stream, full=index)
        declared_duration = _header_duration(container, stream, tb)
        # Read the stream's header while the container is open: closing it frees the stream
        # (``guessed_rate`` on a closed container crashes the interpreter).
        header_fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        header_frames = int(stream.frames or 0)
        width, height = ctx.width, ctx.height

    packed = codec == "mpeg4" and _DIVX_PACKED.search(extradata + packets.first_data) is not None
    sequential_only = has_b_frames and (packed or (decode_order_only and codec not in PARSER_ORDERED_CODECS))
    first_frame = packets.first_frame
    rotation = round(first_frame.rotation or 0) % 360 if first_frame is not None else 0
    if rotation in (90, 270):
        width, height = height, width

    if index:
        if not packets.pts:
            raise EmptyVideoError(path, "the video stream has no frames")
        pts = np.unique(np.asarray(packets.pts, dtype=np.int64))  # sorted presentation order
        times = (pts - round(start / tb)) * float(tb)
        key_pts = np.asarray(sorted(packets.key_pts), dtype=np.int64)
        keyframes = np.searchsorted(pts, key_pts)
        if len(keyframes) == 0 or keyframes[0] != 0:
            keyframes = np.concatenate([[0], keyframes]).astype(np.int64)
        last_duration = packets.last_duration * float(tb) or (1.0 / header_fps if header_fps else 0.0)
        duration = float(times[-1] + last_duration)
        num_frames = len(pts)
        avg_fps = num_frames / duration if duration > 0 else header_fps
        # Damaged files end early: the header still declares the full length. Compare durations, not
        # frame counts: a declared count above the frames found is no sign of damage (AVI counts its empty
        # "dropped frame" entries, which hold no picture), but count / rate is the declared length (AVI
        # without its index reports the duration it found). Slack: audio often outlasts the video a
        # little, and some containers (mkv) declare their end time rather than the duration.
        declared = max(declared_duration, header_frames / header_fps if header_fps else 0.0)
        ends_at = max(duration, start + duration)
        if declared > max(1.05 * ends_at, ends_at + 1.0):
            warnings.warn(
                f"{path}: the container declares {declared:.2f} s but its video data ends at {duration:.2f} s "
                f"({num_frames} frames); the file may be truncated",
                PartialDecodeWarning,
                stacklevel=3,
            )
        return VideoInfo(
            path=str(path), kind="video", codec=codec, width=width, height=height, rotation=rotation,
            duration=duration, avg_fps=avg_fps, num_frames=num_frames, num_frames_exact=True,
            start_time=start, frame_times=times, keyframes=keyframes, frame_pts=pts, time_base=tb,
            stream_index=stream_index, has_b_frames=has_b_frames, sequential_only=sequential_only,
        )

    duration = declared_duration
    num_frames = header_frames or max(1, round(duration * header_fps))
    return VideoInfo(
        path=str(path), kind="video", codec=codec, width=width, height=height, rotation=rotation,
        duration=duration, avg_fps=header_fps, num_frames=num_frames, num_frames_exact=False,
        start_time=start, time_base=tb, stream_index=stream_index, has_b_frames=has_b_frames,
        sequential_only=sequential_only,
    )


@dataclass
class _PacketScan:
    pts: list[int] = field(default_factory=list)
    key_pts: list[int] = field(default_factory=list)
    last_duration: int = 0
    first_frame: av.VideoFrame | None = None
    first_data: bytes = b""  # the first packet's bytes (MPEG-4 headers with the encoder's user data)


def _scan_packets(path: Path, container: av.container.InputContainer, stream: Any, *, full: bool) -> _PacketScan:
    """Demux the video stream, decoding only until the first frame appears.

    Decoding the first frame proves the stream is decodable and gives the
    rotation. Packets without a pts (some AVI files) fall back to their dts.
    """
    scan = _PacketScan()
    decode_error: Exception | None = None
    try:
        for packet in container.demux(stream):
            if scan.first_frame is None:
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:  # a corrupt packet; later ones may still decode
                    frames, decode_error = [], decode_error or e
                if frames:
                    scan.first_frame = frames[0]
            if packet.size == 0 or packet.is_discard:
                continue
            if not scan.first_data:
                scan.first_data = bytes(packet)
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                continue
            scan.pts.append(ts)
            if packet.is_keyframe:
                scan.key_pts.append(ts)
            scan.last_duration = packet.duration or 0
            if not full and scan.first_frame is not None:
                break
    except av.error.FFmpegError as e:
        # Demuxing stopped early (damaged data): keep what was read; the caller warns about the count.
        if not scan.pts:
            raise CorruptVideoError(path, f"no readable video packets ({ffmpeg_reason(e)})") from e
    if not scan.pts and scan.first_frame is None:
        raise EmptyVideoError(path, "the video stream has no frames")
    if scan.first_frame is None:
        reason = f" ({ffmpeg_reason(decode_error)})" if decode_error else ""
        raise CorruptVideoError(path, f"none of its {len(scan.pts)} video packets decodes to a frame{reason}")
    return scan


def _start_time(container: av.container.InputContainer, stream: Any, tb: Fraction) -> float:
    if container.start_time is not None:
        return container.start_time / av.time_base
    if stream.start_time is not None:
        return float(stream.start_time * tb)
    return 0.0


def _header_duration(container: av.container.InputContainer, stream: Any, tb: Fraction) -> float:
    if stream.duration:
        return float(stream.duration * tb)
    if container.duration:
        return container.duration / av.time_base
    return 0.0


def open_image(path: Path) -> Image.Image:
    """Open and load an image with PIL, turning failures into ``VideoDecodeError``."""
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise NotAVideoError(path, f"not a readable image ({e})") from e
    except Image.DecompressionBombError as e:
        raise UnsupportedVideoError(path, f"image too large ({e})") from e
    return image


def _probe_image(path: Path) -> VideoInfo:
    image = open_image(path)
    width, height = image.size
    check_size(path, width, height)
    # EXIF orientations 5-8 swap the displayed width and height.
    if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):
        width, height = height, width
    return VideoInfo(
        path=str(path), kind="image", codec=(image.format or "image").lower(), width=width, height=height,
        rotation=0, duration=0.0, avg_fps=0.0, num_frames=1, num_frames_exact=True,
        frame_times=np.zeros(1), keyframes=np.zeros(1, dtype=np.int64), frame_files=(str(path),),
    )


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _probe_frames_dir(path: Path) -> VideoInfo:
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise EmptyVideoError(path, "the directory has no frame images")
    first = _probe_image(files[0])
    n = len(files)
    return VideoInfo(
        path=str(path), kind="frames", codec=first.codec, width=first.width, height=first.height, rotation=0,
        duration=n / FRAMES_DIR_FPS, avg_fps=FRAMES_DIR_FPS, num_frames=n, num_frames_exact=True,
        frame_times=np.arange(n) / FRAMES_DIR_FPS, keyframes=np.arange(n, dtype=np.int64),
        frame_files=tuple(str(p) for p in files),
    )

