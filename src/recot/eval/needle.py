"""V-NIAH media: needle questions and images, haystack clips, and frame-exact, leak-free needle insertion.

A V-NIAH cell is a haystack of ``L`` frames with a needle image shown for ``N``
seconds at a relative depth. The cell is a real video file the engine encodes
like any other:

1. ``haystack_clip``: ``L`` frames sampled evenly over the haystack video
   (``floor(linspace(0, total-1, L))``, Video-XL's rule), decoded at the model's
   square input size, written once per ``L`` as a lossless 1-fps video;
2. ``write_cell``: the clip's frames with ``N`` copies of the needle image
   inserted before frame ``int(L * depth / 100)`` (Video-XL's position; depth 100
   puts it after the last frame), again lossless at 1 fps, so the needle is
   on screen for exactly ``N`` seconds = ``N`` frames.

Both files use the PNG codec in a QuickTime container: every frame is stored
losslessly and on its own (no motion prediction), so the haystack frames
around the needle decode to exactly the same pixels as without it, and the
needle cannot leak into them. Frames are written at the model's input size, so
the engine's resize is the identity and the model sees these very pixels.

Needle questions use the Video-XL format (``retrieval_question``, ``answer``,
``needle`` lists). Its published file names two needle images differently from
the image files in that repository; :func:`resolve_needle_image` maps them.
With no needle folder, :func:`write_synthetic_needles` draws five needles (a
coloured shape on a white card) with questions about them, so V-NIAH runs
with no download.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from recot.data.atomic import atomic_path, build_once
from recot.eval.api import DataError

#: The Video-XL question file's needle names -> the file names in the Video-XL repository (its SOURCE.md).
VIDEOXL_NEEDLE_NAMES = {
    "-errNPiGXF4 (online-video-cutter.com).png": "-errNPiGXF4",
    "zIudsNnuaSY (online-video-cutter.com).png": "zIudsNnuaSY",
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_OPTION = re.compile(r"\(([A-Z])\)\s*([^\n(]*)")


@dataclass(frozen=True)
class NeedleQuestion:
    """One needle: its image file name, the question (options inside, Video-XL style) and the answer letter."""

    question: str
    answer: str
    image: str

    @property
    def options(self) -> list[str]:
        """The option texts parsed from "(A) text" segments of the question."""
        return [text.strip() for _, text in _OPTION.findall(self.question)]


def read_needle_file(path: Path) -> list[NeedleQuestion]:
    """The needles of a Video-XL question file (parallel lists ``retrieval_question``, ``answer``, ``needle``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the needle question file {path}: {exc}") from exc
    fields = ("retrieval_question", "answer", "needle")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), list) for f in fields):
        raise DataError(f"{path}: expected lists {', '.join(fields)} (the Video-XL needle question format)")
    lengths = {len(data[f]) for f in fields}
    if len(lengths) != 1 or not data["needle"]:
        raise DataError(f"{path}: {', '.join(fields)} must be non-empty lists of the same length")
    needles = []
    for question, answer, image in zip(data["retrieval_question"], data["answer"], data["needle"], strict=False):
        if not re.fullmatch(r"[A-Z]", str(answer).strip()):
            raise DataError(f"{path}: answer {answer!r} of needle {image!r} is not an option letter")
        needles.append(NeedleQuestion(str(question), str(answer).strip(), str(image)))
    return needles


def resolve_needle_image(folder: Path, name: str) -> Path | None:
    """The image file of needle ``name`` in ``folder``: the name itself, Video-XL's renamed files, or the
    same stem with any image extension (or none)."""
    candidates = [name, VIDEOXL_NEEDLE_NAMES.get(name, name)]
    stem = Path(name).stem
    candidates += [stem] + [stem + ext for ext in IMAGE_EXTENSIONS]
    for candidate in candidates:
        path = folder / candidate
        if path.is_file():
            return path
    return None


# ----- synthetic needles ------------------------------------------------------------------
_SHAPE_QUESTION = "What shape is drawn on the white card?"
_COLOUR_QUESTION = "What colour is the {} on the white card?"
_SYNTHETIC = (  # (shape, colour name, RGB, question, options, answer)
    ("triangle", "red", (220, 30, 30), _SHAPE_QUESTION, ("circle", "triangle", "square", "star"), "B"),
    ("circle", "blue", (30, 70, 220), _COLOUR_QUESTION.format("circle"), ("red", "green", "yellow", "blue"), "D"),
    ("square", "green", (30, 160, 60), _SHAPE_QUESTION, ("square", "cross", "triangle", "circle"), "A"),
    ("star", "orange", (245, 140, 20), _COLOUR_QUESTION.format("star"), ("purple", "blue", "orange", "green"), "C"),
    ("cross", "purple", (140, 50, 180), _SHAPE_QUESTION, ("star", "circle", "square", "cross"), "D"),
)  # fmt: skip
SYNTHETIC_VERSION = "synthetic-v1"


def synthetic_needle_image(shape: str, rgb: tuple[int, int, int], size: int = 384) -> np.ndarray:
    """A needle picture (size, size, 3) uint8: a white card on grey with one large coloured shape."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    m = size // 12
    draw.rectangle((m, m, size - m, size - m), fill=(255, 255, 255))
    c, r = size / 2, size * 0.3
    if shape == "circle":
        draw.ellipse((c - r, c - r, c + r, c + r), fill=rgb)
    elif shape == "square":
        draw.rectangle((c - r, c - r, c + r, c + r), fill=rgb)
    elif shape == "triangle":
        draw.polygon([(c, c - r), (c + r, c + r * 0.8), (c - r, c + r * 0.8)], fill=rgb)
    elif shape == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.4)
        draw.polygon([(c + q * np.cos(a), c - q * np.sin(a)) for a, q in zip(angles, radii, strict=False)], fill=rgb)
    elif shape == "cross":
        w = r / 3
        draw.rectangle((c - w, c - r, c + w, c + r), fill=rgb)
        draw.rectangle((c - r, c - w, c + r, c + w), fill=rgb)
    else:
        raise ValueError(f"unknown needle shape {shape!r}")
    return np.asarray(image)


def write_synthetic_needles(folder: Path) -> Path:
    """Write the synthetic needles (PNG images + ``qa.json`` in the Video-XL format) once; returns ``folder``."""
    from PIL import Image

    def build() -> None:
        tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(6)}")
        tmp.mkdir(parents=True)
        try:
            questions, answers, names = [], [], []
            for shape, colour, rgb, question, options, answer in _SYNTHETIC:
                name = f"{colour}_{shape}.png"
                Image.fromarray(synthetic_needle_image(shape, rgb)).save(tmp / name)
                lettered = "\n".join(f"({chr(ord('A') + i)}) {o}" for i, o in enumerate(options))
                # Video-XL's wording, "Response the correct choice only" included.
                instruction = "Response the correct choice only."
                questions.append(f"Question: {question} {instruction}\nOptions:{lettered}\nChoose the best option.")
                answers.append(answer)
                names.append(name)
            qa = {"retrieval_question": questions, "answer": answers, "needle": names}
            (tmp / "qa.json").write_text(json.dumps(qa, indent=1) + "\n")
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    return build_once(folder, build)


def load_needle_image(path: Path, size: int) -> np.ndarray:
    """A needle image as the model's input frame: RGB, resized to ``size x size`` (bicubic, aspect not kept)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read needle image {path}: {exc}") from exc


# ----- haystack clips and cells ----------------------------------------------------------------
def write_lossless(path: Path, frames: Iterator[np.ndarray], size: int) -> Path:
    """Write RGB frames (size, size, 3) as a 1-fps PNG-in-QuickTime video, atomically."""
    with atomic_path(path, suffix=".mov") as tmp, av.open(str(tmp), "w") as container:
        stream = container.add_stream("png", rate=1)
        stream.width = stream.height = size
        stream.pix_fmt = "rgb24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    return path


def read_lossless(path: Path) -> Iterator[np.ndarray]:
    """The frames of a file written by :func:`write_lossless`, in order."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def haystack_clip(haystack: Path, num_frames: int, size: int, target: Path) -> Path:
    """``num_frames`` frames sampled evenly over ``haystack`` at ``size x size``, as a lossless video (built once)."""
    from recot.video import iter_frames, plan_frames, probe

    def build() -> None:
        plan = plan_frames(probe(haystack), num_frames=num_frames)
        batches = iter_frames(haystack, plan, batch_size=64, size=size)
        frames = (frame for batch in batches for frame in batch.frames)
        write_lossless(target, frames, size)
        # A frame that failed to decode would shift the depths: check the count.
        count = sum(1 for _ in read_lossless(target))
        if count != num_frames:
            target.unlink(missing_ok=True)
            raise DataError(f"{haystack}: only {count} of the {num_frames} sampled frames could be decoded")

    return build_once(target, build)


def needle_position(num_frames: int, depth_percent: float) -> int:
    """Index of the haystack frame the needle is inserted before (Video-XL: ``int(L * depth / 100)``)."""
    return int(num_frames * depth_percent / 100)


def write_cell(
    clip: Path, num_frames: int, needle: np.ndarray, depth_percent: float, needle_frames: int, target: Path
) -> Path:
    """The ``num_frames``-frame haystack clip with ``needle_frames`` copies of ``needle`` inserted at
    ``depth_percent`` (streamed: memory holds one frame)."""
    at = needle_position(num_frames, depth_percent)

    def frames() -> Iterator[np.ndarray]:
        for i, frame in enumerate(read_lossless(clip)):
            if i == at:
                yield from [needle] * needle_frames
            yield frame
        if at >= num_frames:
            yield from [needle] * needle_frames

    return write_lossless(target, frames(), needle.shape[0])
