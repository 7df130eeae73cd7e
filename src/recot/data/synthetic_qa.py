"""Synthetic long-video question answering: procedural videos with events at known times, and exact answers.

Each video is drawn from its seed alone: a haystack of named procedural scenes
("ocean", "forest", "city"... each its own texture, palette and motion) that
cut from one to the next, with objects (a shape in a colour, black outline)
inserted at known times:

* the needle: one object on screen once, for a few seconds;
* a counted object: on screen ``count`` times;
* two ordered objects: each on screen once, one before the other.

Every object has its own shape and its own colour, and no two events overlap
in time. Five question templates have exact answers (``QA_TYPES``, listed in
``docs/synthetic-qa.md``): when the needle appears (a time, correct within one
frame group), the needle's colour or shape (a word), how many times the counted
object appears (a number), which ordered object appears first (its name), and
which scene is on screen at a time (the scene's name). :func:`check_answer`
scores a model's answer for each.

Splits come from disjoint seed ranges (:data:`SPLIT_SEEDS`). The ``ood`` split
draws its objects from shape x colour combinations (:data:`HELD_OUT_COMBOS`)
and its scenes from :data:`HELD_OUT_SCENES`, which the other splits never use.

Frames are rendered in vectorised chunks: uint8 (T, S, S, 3) RGB, S = ``size``
(128 by default, the ``lite`` preset's input), written as H.264 (one thread, so
the bytes depend on the seed only; keyframes every 300 frames) with PyAV.
:func:`write_dataset` writes the videos (skipping those already there), then
the rows as LLaVA-Video JSON (``recot train``'s data format) and a manifest of
every video's events.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from recot.data.atomic import atomic_path, atomic_write_text
from recot.data.clock import clock_time

# ----- vocabulary ---------------------------------------------------------------------------------------------------
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
#: Saturated object colours; scene palettes are muted so that objects stand out from every background.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (20, 200, 40),
    "blue": (30, 60, 240),
    "yellow": (250, 230, 20),
    "purple": (150, 30, 210),
    "orange": (255, 135, 0),
    "pink": (255, 80, 190),
    "cyan": (0, 225, 235),
}
COLOR_NAMES = tuple(COLORS)
#: shape x colour combinations only the ``ood`` split uses: two colours per shape, every colour at least once.
HELD_OUT_COMBOS = frozenset(
    (shape, COLOR_NAMES[(i + k) % len(COLOR_NAMES)]) for i, shape in enumerate(SHAPES) for k in (3, 6)
)


@dataclass(frozen=True)
class Scene:
    """A procedural background: ``texture`` kind, 3-colour ``palette`` (dark to light), spatial ``scale``
    (cycles across the frame) and ``speed`` (cycles per minute)."""

    texture: str
    palette: tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]
    scale: float
    speed: float


SCENES: dict[str, Scene] = {
    "ocean": Scene("waves", ((20, 50, 90), (40, 100, 140), (120, 170, 190)), 2.5, 6.0),
    "forest": Scene("blobs", ((25, 50, 25), (50, 90, 40), (110, 95, 60)), 3.0, 2.0),
    "city": Scene("checker", ((60, 60, 66), (110, 110, 115), (170, 160, 120)), 4.0, 3.0),
    "desert": Scene("dunes", ((150, 115, 70), (190, 160, 110), (220, 200, 160)), 2.0, 1.5),
    "snow": Scene("noise", ((150, 160, 175), (190, 195, 205), (225, 228, 235)), 6.0, 8.0),
    "night": Scene("rings", ((10, 12, 30), (30, 35, 60), (70, 70, 90)), 3.0, 4.0),
    "meadow": Scene("stripes", ((70, 110, 50), (110, 140, 70), (160, 170, 100)), 5.0, 5.0),
    "cave": Scene("noise", ((30, 25, 20), (70, 60, 50), (110, 100, 90)), 3.0, 1.0),
    "sunset": Scene("gradient", ((90, 50, 70), (170, 100, 80), (210, 160, 110)), 1.0, 2.0),
    "jungle": Scene("blobs", ((20, 60, 40), (40, 110, 70), (90, 140, 60)), 5.0, 6.0),
    "lava": Scene("waves", ((40, 10, 10), (110, 40, 20), (160, 90, 40)), 4.0, 3.0),
    "space": Scene("rings", ((5, 5, 10), (40, 20, 60), (90, 80, 120)), 6.0, 10.0),
}
#: Scenes only the ``ood`` split uses.
HELD_OUT_SCENES = ("lava", "space")

#: First seed and number of seeds of each split; the ranges are disjoint.
SPLIT_SEEDS: dict[str, tuple[int, int]] = {
    "train": (0, 1_000_000),
    "validation": (1_000_000, 100_000),
    "test": (1_100_000, 100_000),
    "ood": (2_000_000, 100_000),
}
QA_TYPES = ("when", "attribute", "count", "order", "scene")
FRAMES_PER_GROUP = 4  # the model's frames per compressed group: the tolerance of a "when" answer
_GOP_FRAMES = 300
#: x264 quality: ~2.5 MB per hour at 128 px; object interiors stay within ~20 levels per channel of their colour.
CRF = 26

#: Question phrasings per type; ``{obj}`` is e.g. "blue triangle", ``{time}`` e.g. "12:05".
TEMPLATES: dict[str, tuple[str, ...]] = {
    "when": ("When does the {obj} appear?", "At what time is the {obj} shown?", "When can you see the {obj}?"),
    "attribute_color": ("What colour was the {shape} that appeared briefly?", "What color is the {shape}?"),
    "attribute_shape": ("What shape was the {color} object that appeared briefly?", "What shape is the {color} object?"),
    "count": ("How many times does the {obj} appear?", "How often is the {obj} shown?"),
    "order": ("Which appears first, the {a} or the {b}?", "Which is shown earlier: the {a} or the {b}?"),
    "scene": ("What is on screen at {time}?", "Which scene is shown at {time}?"),
    "describe": ("Describe the video with times.", "List what is shown, with times."),
    "identify": ("Which object is on screen at {time}?", "What object is shown at {time}?"),
}


# ----- what a video holds ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectEvent:
    """An object on screen from ``start`` for ``seconds`` (times in seconds), centred at (``x``, ``y``) px."""

    role: str  # "needle", "count", "first"/"second" of the ordered pair
    shape: str
    color: str
    start: float
    seconds: float
    x: int
    y: int

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def visible(self, t: np.ndarray) -> np.ndarray:
        return (t >= self.start) & (t < self.start + self.seconds)


@dataclass(frozen=True)
class SceneSegment:
    """``scene`` on screen from ``start`` to ``end`` seconds; ``phase`` and ``speed`` vary its look per video."""

    scene: str
    start: float
    end: float
    phase: float
    speed: float


@dataclass
class VideoSpec:
    """Everything about one video, drawn from its seed: size, timing, scenes and object events."""

    id: str
    split: str
    seed: int
    duration: float
    fps: float
    size: int
    object_size: int
    segments: list[SceneSegment]
    events: list[ObjectEvent]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    def frame_times(self) -> np.ndarray:
        return np.arange(self.num_frames) / self.fps

    def scene_at(self, t: float) -> str:
        """The scene on screen at ``t`` seconds."""
        for seg in self.segments:
            if seg.start <= t < seg.end:
                return seg.scene
        return self.segments[-1].scene

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoSpec:
        data = dict(data)
        data["segments"] = [SceneSegment(**s) for s in data["segments"]]
        data["events"] = [ObjectEvent(**e) for e in data["events"]]
        return cls(**data)


def split_seeds(split: str, count: int, first: int = 0) -> range:
    """Seeds of videos ``first .. first + count - 1`` of ``split`` (raises ``ValueError`` past the split's range)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLIT_SEEDS)}")
    base, size = SPLIT_SEEDS[split]
    if first < 0 or count < 0 or first + count > size:
        raise ValueError(f"split {split!r} has {size} seeds; videos {first}..{first + count - 1} do not fit")
    return range(base + first, base + first + count)


#: ``recot demo``'s video: the test split's third seed as one hour at 1 fps, 64 px (held out: never trained on).
DEMO_SEED = 1_100_002


def demo_spec() -> VideoSpec:
    """The spec of ``recot demo``'s one-hour video (:data:`DEMO_SEED`; at 37:12 its scene is not its longest)."""
    return make_video_spec(DEMO_SEED, 60.0, 60.0, 1.0, 64)


def split_of_seed(seed: int) -> str:
    """The split whose seed range holds ``seed``."""
    for name, (base, size) in SPLIT_SEEDS.items():
        if base <= seed < base + size:
            return name
    raise ValueError(f"seed {seed} is in no split's range")


def allowed_vocabulary(split: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(shape, colour) combinations and scene names that ``split`` draws from."""
    held_out = split == "ood"
    combos = [(s, c) for s in SHAPES for c in COLOR_NAMES if ((s, c) in HELD_OUT_COMBOS) == held_out]
    scenes = [name for name in SCENES if (name in HELD_OUT_SCENES) == held_out]
    return combos, scenes


def make_video_spec(
    seed: int,
    min_minutes: float = 5.0,
    max_minutes: float = 120.0,
    fps: float = 1.0,
    size: int = 128,
) -> VideoSpec:
    """The video of ``seed`` (its split follows from the seed): duration log-uniform in the minute range.

    Durations are whole seconds; events start on whole seconds and last 3-8 s
    (the needle 4-8 s), at least two frame groups apart from each other and
    from the ends; scene segments last at least 40 s.
    """
    split = split_of_seed(seed)
    if not 0 < min_minutes <= max_minutes:
        raise ValueError(f"need 0 < min_minutes <= max_minutes, got {min_minutes} and {max_minutes}")
    rng = np.random.default_rng([seed, 0x5EED])
    lo, hi = math.log(min_minutes * 60), math.log(max_minutes * 60)
    duration = float(max(60, round(math.exp(rng.uniform(lo, hi)))))
    combos, scene_names = allowed_vocabulary(split)

    # Scenes: 2..8 segments (more for longer videos), consecutive scenes differ.
    n_segments = int(min(8, max(2, rng.integers(2, 4) + duration // 1200)))
    n_segments = int(min(n_segments, duration // 40))
    cuts = _spaced_points(rng, n_segments - 1, 40.0, duration - 40.0, 40.0)
    bounds = [0.0, *cuts, duration]
    segments, previous = [], None
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        name = str(rng.choice([s for s in scene_names if s != previous]))
        segments.append(SceneSegment(name, a, b, float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.6, 1.6))))
        previous = name

    # Objects: four, each its own shape and its own colour.
    chosen: list[tuple[str, str]] = []
    while len(chosen) < 4:
        shape, color = combos[int(rng.integers(len(combos)))]
        if all(shape != s and color != c for s, c in chosen):
            chosen.append((shape, color))
    count = int(rng.integers(1, 6))
    durations = [float(rng.integers(4, 9))] + [float(rng.integers(3, 7)) for _ in range(count + 2)]
    gap = 2 * FRAMES_PER_GROUP / fps  # two frame groups between events
    starts = _spaced_intervals(rng, durations, gap, duration)
    roles = ["needle"] + ["count"] * count + ["first", "second"]
    objs = [chosen[0]] + [chosen[1]] * count + [chosen[2], chosen[3]]
    if starts[-2] > starts[-1]:  # the earlier of the pair is "first" (its slot and length move together)
        starts[-2], starts[-1] = starts[-1], starts[-2]
        durations[-2], durations[-1] = durations[-1], durations[-2]
    object_size = max(12, size * 3 // 8)
    half = object_size // 2 + 2
    events = []
    for role, (shape, color), start, secs in zip(roles, objs, starts, durations, strict=True):
        x, y = (int(v) for v in rng.integers(half, size - half, 2))
        events.append(ObjectEvent(role, shape, color, start, secs, x, y))
    events.sort(key=lambda e: e.start)
    return VideoSpec(f"{split}-{seed:07d}", split, seed, duration, fps, size, object_size, segments, events)


def _spaced_points(rng: np.random.Generator, n: int, lo: float, hi: float, gap: float) -> list[float]:
    """``n`` sorted whole-second points in [lo, hi], at least ``gap`` apart (stars and bars: uniform, no retries)."""
    slack = hi - lo - gap * max(0, n - 1)
    if n <= 0:
        return []
    if slack < 0:
        raise ValueError(f"{n} points {gap} s apart do not fit in [{lo}, {hi}]")
    offsets = np.sort(rng.uniform(0, slack, n))
    return [float(math.floor(lo + o + i * gap)) for i, o in enumerate(offsets)]


def _spaced_intervals(rng: np.random.Generator, lengths: list[float], gap: float, duration: float) -> list[float]:
    """Start times (whole seconds, in a random order) of intervals of ``lengths``, ``gap`` apart and from the ends."""
    order = rng.permutation(len(lengths))
    total = sum(lengths) + gap * (len(lengths) + 1)
    slack = duration - total
    if slack < 0:
        raise ValueError(f"{len(lengths)} events do not fit in {duration} s")
    offsets = np.sort(np.floor(rng.uniform(0, slack, len(lengths))))
    starts = [0.0] * len(lengths)
    t = gap
    for k, idx in enumerate(order):
        starts[idx] = float(math.ceil(t + offsets[k]))
        t += lengths[idx] + gap
    return starts


# ----- questions ---------------------------------------------------------------------------------------------------
def parse_time(text: str) -> float | None:
    """The first ``h:mm:ss`` or ``mm:ss`` time in ``text``, in seconds (None if there is none).

    Laxer than the prompt's clock pattern (``recot.model.processor.CLOCK_PATTERN``): it scores a model's answer,
    so ``"2:5"`` or a clock glued to other digits still reads as a time."""
    match = re.search(r"(\d+):(\d{1,2})(?::(\d{1,2}))?", text)
    if not match:
        return None
    a, b, c = match.groups()
    if c is None:
        return float(int(a) * 60 + int(b))
    return float(int(a) * 3600 + int(b) * 60 + int(c))


@dataclass(frozen=True)
class Question:
    """One question about a video: its type, text, exact answer and what the checker needs."""

    qa_type: str
    question: str
    answer: str
    options: tuple[str, ...] = ()  # the two names of an "order" question
    tolerance: float = 0.0  # seconds, for "when"
    # (start, end) seconds of what the answer is read from: the named object's showings (the selector's evidence)
    evidence: tuple[tuple[float, float], ...] = ()


def shown_during(*events: ObjectEvent) -> tuple[tuple[float, float], ...]:
    """The (start, end) seconds the ``events`` are on screen, in time order: a question's evidence."""
    return tuple(sorted((e.start, e.start + e.seconds) for e in events))


def make_questions(spec: VideoSpec) -> list[Question]:
    """One question of each type in ``QA_TYPES`` about ``spec``, phrasings drawn from its seed."""
    rng = np.random.default_rng([spec.seed, 0xA5])
    needle = next(e for e in spec.events if e.role == "needle")
    counted = [e for e in spec.events if e.role == "count"]
    first = next(e for e in spec.events if e.role == "first")
    second = next(e for e in spec.events if e.role == "second")

    def pick(kind: str) -> str:
        return str(rng.choice(TEMPLATES[kind]))

    needle_seen = shown_during(needle)
    out = [
        Question("when", pick("when").format(obj=needle.name), clock_time(needle.start),
                 tolerance=FRAMES_PER_GROUP / spec.fps, evidence=needle_seen),
    ]  # fmt: skip
    if rng.random() < 0.5:
        out.append(Question("attribute", pick("attribute_color").format(shape=needle.shape), needle.color, evidence=needle_seen))
    else:
        out.append(Question("attribute", pick("attribute_shape").format(color=needle.color), needle.shape, evidence=needle_seen))
    out.append(Question("count", pick("count").format(obj=counted[0].name), str(len(counted)),
                        evidence=shown_during(*counted)))  # fmt: skip
    a, b = (first, second) if rng.random() < 0.5 else (second, first)  # the question's order says nothing
    out.append(Question("order", pick("order").format(a=a.name, b=b.name), first.name, options=(a.name, b.name),
                        evidence=shown_during(first, second)))  # fmt: skip
    # A time well inside a segment: at least two frame groups from its cuts.
    margin = 2 * FRAMES_PER_GROUP / spec.fps
    seg = spec.segments[int(rng.integers(len(spec.segments)))]
    t = float(math.floor(rng.uniform(seg.start + margin, seg.end - margin)))
    out.append(Question("scene", pick("scene").format(time=clock_time(t)), seg.scene))
    return out


def make_description(spec: VideoSpec) -> Question:
    """A training caption of ``spec``: every scene and object event in time order, each with its start time.

    ``"00:00 ocean; 00:12 red circle; 00:40 forest; 00:52 red circle"``. Dense,
    grounded supervision (every entry needs the video) that teaches a model
    trained from scratch what the scenes and objects look like and how the
    group timestamps read, before and beside the single-answer questions; the
    rows are training data (``make-qa-data --describe``), not a test type.
    """
    rng = np.random.default_rng([spec.seed, 0xDE])
    entries = [(seg.start, seg.scene) for seg in spec.segments] + [(e.start, e.name) for e in spec.events]
    answer = "; ".join(f"{clock_time(t)} {name}" for t, name in sorted(entries, key=lambda e: e[0]))
    return Question("describe", str(rng.choice(TEMPLATES["describe"])), answer, tolerance=FRAMES_PER_GROUP / spec.fps)


def make_identification(spec: VideoSpec) -> list[Question]:
    """Training turns of ``spec``: "Which object is on screen at mm:ss?" -> its name, one per object event.

    The time is the event's middle second (the object is on screen then), the
    turns in a seeded random order: one multi-turn conversation per video
    (``make-qa-data --ground``). It asks the way the ``scene`` questions do (a
    time in, a name out), which a model trained from scratch learns first, so
    that it learns to name what it sees; the test types then ask the other way
    round (a name in). Training data, not a test type: ``check_answer`` scores
    a turn as an ``attribute``-style name (both words, no other colour or shape).
    """
    rng = np.random.default_rng([spec.seed, 0x1D])
    turns = [
        Question("identify", str(rng.choice(TEMPLATES["identify"])).format(time=clock_time(math.floor(e.start + e.seconds / 2))), e.name)
        for e in spec.events
    ]  # fmt: skip
    return [turns[i] for i in rng.permutation(len(turns))]


def make_grounding(spec: VideoSpec, turns: int, index: int = 0) -> list[Question]:
    """Training turns of ``spec`` that each name a time: ``turns`` of them, drawn from its seed and ``index``.

    Each turn is, with even odds, a ``scene`` question at a second whose whole
    frame group shows one scene ("What is on screen at 01:34?" -> "forest") or an
    ``identify`` question at a second an object is on screen, in a frame group
    that shows it at least half the time ("Which object is on screen at 02:07?"
    -> "red circle"; events drawn alike), at distinct seconds. Many such turns
    in one conversation (``make-qa-data --ground-turns``) give a model trained
    from scratch many time lookups for one pass over the video's tokens;
    ``index`` tells a video's conversations apart. Training data: every turn
    asks a time in and a name out, so no turn's answer gives away another's
    (the test types ask the other way round, and stay in rows of their own).
    """
    if turns < 1:
        raise ValueError(f"a grounding conversation needs at least one turn, got {turns}")
    rng = np.random.default_rng([spec.seed, 0x6D, index])
    times = spec.frame_times()
    groups = [times[g : g + FRAMES_PER_GROUP] for g in range(0, len(times), FRAMES_PER_GROUP)]  # each group's seconds
    # Seconds of groups that show one scene throughout (a group across a cut has no single answer).
    scene_seconds = [float(t) for g in groups if len({spec.scene_at(float(t)) for t in g}) == 1 for t in g]
    # Per event, the seconds it is on screen in a group that shows it at least half the time.
    object_seconds = {
        e: [float(t) for g in groups if e.visible(g).sum() * 2 >= FRAMES_PER_GROUP for t in g[e.visible(g)]]
        for e in spec.events
    }
    events = [e for e in spec.events if object_seconds[e]]
    available = len(set(scene_seconds).union(*object_seconds.values()))
    used: set[float] = set()
    out = []
    while len(out) < turns and len(used) < available:
        if events and (not scene_seconds or rng.random() < 0.5):
            event = events[int(rng.integers(len(events)))]  # each event alike, however long it is shown
            t = object_seconds[event][int(rng.integers(len(object_seconds[event])))]
            kind, answer = "identify", event.name
        else:
            t = scene_seconds[int(rng.integers(len(scene_seconds)))]
            kind, answer = "scene", spec.scene_at(t)
        if t in used:
            continue
        used.add(t)
        out.append(Question(kind, str(rng.choice(TEMPLATES[kind])).format(time=clock_time(t)), answer))
    return out


def make_object_turns(spec: VideoSpec, index: int = 0) -> list[Question]:
    """Training turns of ``spec`` that name an object: every question of the four object types it answers.

    Per object, its ``attribute`` (colour from shape, or shape from colour) and
    its ``count``; the needle's ``when``; the ordered pair's ``order``: ten
    turns, phrasings drawn from its seed and ``index``. The attribute turns come
    first, because every other turn names its objects in full and would give
    their answers away; the rest are shuffled, and none gives away another's
    answer (the pair's times are not asked). One conversation
    (``make-qa-data --object-turns``) trains a pass over the video's tokens on
    ten answers instead of one.
    """
    rng = np.random.default_rng([spec.seed, 0x0B, index])
    shown: dict[str, list[ObjectEvent]] = {}
    for event in sorted(spec.events, key=lambda e: e.start):
        shown.setdefault(event.name, []).append(event)

    def pick(kind: str) -> str:
        return str(rng.choice(TEMPLATES[kind]))

    attributes = []
    for name in sorted(shown):
        event = shown[name][0]
        seen = shown_during(*shown[name])
        if rng.random() < 0.5:
            attributes.append(Question("attribute", pick("attribute_color").format(shape=event.shape), event.color, evidence=seen))
        else:
            attributes.append(Question("attribute", pick("attribute_shape").format(color=event.color), event.shape, evidence=seen))
    needle = next(e for e in spec.events if e.role == "needle")
    first = next(e for e in spec.events if e.role == "first")
    second = next(e for e in spec.events if e.role == "second")
    a, b = (first, second) if rng.random() < 0.5 else (second, first)
    rest = [
        Question("when", pick("when").format(obj=needle.name), clock_time(needle.start), tolerance=FRAMES_PER_GROUP / spec.fps,
                 evidence=shown_during(needle)),
        Question("order", pick("order").format(a=a.name, b=b.name), first.name, options=(a.name, b.name),
                 evidence=shown_during(first, second)),
        *(Question("count", pick("count").format(obj=name), str(len(events)), evidence=shown_during(*events))
          for name, events in sorted(shown.items())),
    ]  # fmt: skip
    return [attributes[i] for i in rng.permutation(len(attributes))] + [rest[i] for i in rng.permutation(len(rest))]


_NUMBER_WORDS = {w: i for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])}


def check_answer(question: Question | dict[str, Any], prediction: str) -> bool:
    """True when ``prediction`` answers ``question`` (a :class:`Question` or a row written by :func:`write_dataset`).

    * when: the first time in the text is within ``tolerance`` seconds of the truth;
    * attribute, scene: the true word is in the text and no other colour/shape/scene name is;
    * count: the first number (digits or a word up to ten) equals the truth, and the text holds no time;
    * order: the text names the true object and not the other one.
    """
    if isinstance(question, dict):
        extra = question.get("qa", question)
        question = Question(extra["qa_type"], "", extra["answer"], tuple(extra.get("options", ())),
                            float(extra.get("tolerance", 0.0)))  # fmt: skip
    text = " ".join(re.findall(r"[a-z0-9:]+", prediction.lower()))
    truth = question.answer
    kind = question.qa_type
    if kind == "when":
        got = parse_time(text)
        want = parse_time(truth)
        return got is not None and want is not None and abs(got - want) <= question.tolerance
    if kind == "count":
        if parse_time(text) is not None:  # "03:12" is a time, not a count (its "03" must not score as 3)
            return False
        match = re.search(r"\b(\d+|" + "|".join(_NUMBER_WORDS) + r")\b", text)
        if not match:
            return False
        word = match.group(1)
        return (int(word) if word.isdigit() else _NUMBER_WORDS[word]) == int(truth)
    words = set(text.split())
    if kind in ("attribute", "scene"):
        # Words of the answer's own kind: "a red one" answers a colour question, "red or blue" does not.
        vocabulary = set(SCENES) if kind == "scene" else set(COLOR_NAMES) if truth in COLORS else set(SHAPES)
        return words & vocabulary == {truth}
    if kind == "order":
        wrong = next(o for o in question.options if o != truth)
        return _names(text, truth) and not _names(text, wrong)
    if kind == "identify":  # "red circle": both words, and no other colour or shape
        colour, shape = truth.split(" ", 1)
        return words & set(COLOR_NAMES) == {colour} and words & set(SHAPES) == {shape}
    if kind == "describe":  # the same entries in the same order, each time within the tolerance
        got, want = _entries(prediction.lower()), _entries(truth)
        return len(got) == len(want) and all(
            g_name == w_name and abs(g_time - w_time) <= question.tolerance
            for (g_time, g_name), (w_time, w_name) in zip(got, want, strict=True)
        )
    raise ValueError(f"unknown question type {kind!r}; types: {', '.join(QA_TYPES)}")


def _entries(text: str) -> list[tuple[float, str]]:
    """``"00:00 ocean; 00:12 red circle"`` -> [(0.0, "ocean"), (12.0, "red circle")]."""
    out = []
    for stamp, name in re.findall(r"(\d+:\d{2}(?::\d{2})?)\s+([a-z]+(?: [a-z]+)?)", text):
        seconds = parse_time(stamp)
        if seconds is not None:
            out.append((seconds, name))
    return out


def _names(text: str, name: str) -> bool:
    return re.search(r"\b" + re.escape(name) + r"\b", text) is not None


# ----- rendering ---------------------------------------------------------------------------------------------------
def _shape_mask(shape: str, size: int) -> np.ndarray:
    """(size, size) bool mask of ``shape`` filling a size x size box."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - c
    r = size / 2
    if shape == "circle":
        return xx**2 + yy**2 <= r**2
    if shape == "square":
        return (np.abs(xx) <= r * 0.85) & (np.abs(yy) <= r * 0.85)
    if shape == "triangle":  # apex up
        return (yy <= r * 0.9) & (yy >= -r) & (np.abs(xx) <= (yy + r) * 0.55)
    if shape == "diamond":
        return np.abs(xx) + np.abs(yy) <= r
    if shape == "cross":
        arm = r * 0.33
        return ((np.abs(xx) <= arm) | (np.abs(yy) <= arm)) & (np.abs(xx) <= r) & (np.abs(yy) <= r)
    if shape == "ring":
        d2 = xx**2 + yy**2
        return (d2 <= r**2) & (d2 >= (r * 0.55) ** 2)
    raise ValueError(f"unknown shape {shape!r}")


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def object_masks(shape: str, object_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(fill, outline) bool masks, each (object_size + 4, object_size + 4): the shape and its 2-px black border."""
    fill = np.pad(_shape_mask(shape, object_size), 2)
    return fill, _dilate(fill, 2) & ~fill


def _texture(kind: str, t: np.ndarray, xx: np.ndarray, yy: np.ndarray, scale: float, speed: float, phase: float,
             noise: np.ndarray) -> np.ndarray:  # fmt: skip
    """Values in [0, 1], (T, S, S), of a texture at times ``t`` (T, 1, 1); ``xx``/``yy`` in [0, 1)."""
    w = 2 * np.pi
    m = t * speed / 60.0  # cycles moved so far
    k = scale
    if kind == "waves":
        v = np.sin(w * (k * xx + 0.3 * k * yy - m) + phase) + 0.5 * np.sin(w * (2.1 * k * yy + 0.7 * m) + 2 * phase)
        return (v + 1.5) / 3.0
    if kind == "blobs":
        v = np.sin(w * (k * xx + 0.2 * np.sin(w * (yy + 0.3 * m))) + phase) * np.sin(w * (k * yy - 0.5 * m) + phase)
        return (v + 1) / 2
    if kind == "checker":
        v = np.sign(np.sin(w * (k * xx - m) + phase)) * np.sign(np.sin(w * k * yy + phase))
        return 0.5 + 0.4 * v + 0.1 * np.sin(w * (xx + yy + m))
    if kind == "dunes":
        v = np.sin(w * (k * yy + 0.4 * np.sin(w * (xx + 0.2 * m)) - 0.3 * m) + phase)
        return (v + 1) / 2 * (0.6 + 0.4 * yy)
    if kind == "stripes":
        v = np.sin(w * (k * (xx + yy) - m) + phase)
        return (v + 1) / 2
    if kind == "rings":
        r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
        v = np.sin(w * (k * r - m) + phase)
        return (v + 1) / 2 * (1 - 0.6 * r)
    if kind == "gradient":
        v = yy + 0.15 * np.sin(w * (k * xx + m) + phase)
        return np.clip(v, 0, 1)
    if kind == "noise":
        # A fixed noise image scrolled diagonally: snow / rock grain that moves.
        n = noise.shape[0]
        shift = (m * n / 4).astype(int).reshape(-1)
        sy = ((yy[..., 0] * n).astype(int) + shift[:, None]) % n  # (T, S)
        sx = ((xx[0] * n).astype(int)[None, :] + shift[:, None]) % n  # (T, S)
        return noise[sy[:, :, None], sx[:, None, :]]
    raise ValueError(f"unknown texture {kind!r}")


def render_frames(spec: VideoSpec, start: int, stop: int) -> np.ndarray:
    """uint8 (stop - start, S, S, 3) RGB frames ``start .. stop - 1`` of ``spec`` (any range: no state)."""
    size = spec.size
    t_all = np.arange(start, stop) / spec.fps
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = coords[:, None], coords[None, :]
    out = np.empty((len(t_all), size, size, 3), dtype=np.uint8)
    for index, seg in enumerate(spec.segments):
        sel = np.nonzero((t_all >= seg.start) & (t_all < seg.end))[0]
        if not len(sel):
            continue
        scene = SCENES[seg.scene]
        # Drawn from (seed, segment) so that any frame range renders the same pixels.
        noise_rng = np.random.default_rng([spec.seed, 0x401, index])
        noise = noise_rng.random((64, 64)).astype(np.float32) if scene.texture == "noise" else np.empty(0)
        v = _texture(scene.texture, t_all[sel].astype(np.float32)[:, None, None], xx, yy, scene.scale,
                     scene.speed * seg.speed, seg.phase, noise)  # fmt: skip
        out[sel] = _palette(np.asarray(scene.palette, dtype=np.float32), np.broadcast_to(v, (len(sel), size, size)))
    half_box = spec.object_size // 2 + 2
    for event in spec.events:
        sel = np.nonzero(event.visible(t_all))[0]
        if not len(sel):
            continue
        fill, outline = object_masks(event.shape, spec.object_size)
        y0, x0 = event.y - half_box, event.x - half_box
        box = out[sel, y0 : y0 + fill.shape[0], x0 : x0 + fill.shape[1]]
        box[:, fill] = COLORS[event.color]
        box[:, outline] = (0, 0, 0)
        out[sel, y0 : y0 + fill.shape[0], x0 : x0 + fill.shape[1]] = box
    return out


def _palette(palette: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Values (T, S, S) in [0, 1] -> uint8 (T, S, S, 3), piecewise linear through the 3 palette colours.

    Through a 256-entry lookup table: one gather instead of float arithmetic on every channel.
    """
    x = np.linspace(0, 1, 256, dtype=np.float32) * (len(palette) - 1)
    i = np.minimum(x.astype(np.int64), len(palette) - 2)
    f = (x - i)[:, None]
    lut = (palette[i] * (1 - f) + palette[i + 1] * f + 0.5).astype(np.uint8)
    index = (np.clip(v, 0, 1) * 255 + 0.5).astype(np.uint8)
    return lut[index]


def add_h264_stream(container: Any, rate: Any, size: int, crf: int = CRF, keyframe_interval: int | None = None) -> Any:
    """A ``size`` x ``size`` yuv420p x264 stream (preset veryfast) added to a PyAV output ``container``, set so that
    the file depends on the frames alone: the generator's videos and the benchmarks' re-encodes use it.

    One thread (frame threads change the bits) and no macroblock tree: with mbtree on, x264's output also depends
    on what the heap held before (the same frames gave 3-4 different files in 30 writes of a 64 px clip with other
    frames allocated in between; with it off, 1). ``keyframe_interval`` None keeps x264's default (250 frames).
    """
    stream = container.add_stream("libx264", rate=rate)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    options = {"preset": "veryfast", "crf": str(crf), "threads": "1", "x264-params": "mbtree=0"}
    if keyframe_interval is not None:
        options["g"] = str(keyframe_interval)
    stream.options = options
    stream.codec_context.thread_count = 1
    return stream


def write_video(
    spec: VideoSpec, path: str | Path, chunk: int = 256, on_frames: Callable[[int], None] | None = None, crf: int = CRF
) -> Path:
    """Render ``spec`` to an H.264 MP4 at ``path``, atomically; ``on_frames(n)`` after each chunk of n frames."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = _fps_fraction(spec.fps)
    with atomic_path(path, suffix=".mp4") as tmp, av.open(str(tmp), "w") as container:
        stream = add_h264_stream(container, rate, spec.size, crf, keyframe_interval=_GOP_FRAMES)
        for a in range(0, spec.num_frames, chunk):
            frames = render_frames(spec, a, min(spec.num_frames, a + chunk))
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            if on_frames is not None:
                on_frames(len(frames))
        container.mux(stream.encode())
    return path


def _fps_fraction(fps: float) -> Any:
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


# ----- dataset -----------------------------------------------------------------------------------------------------
def rows_for(
    spec: VideoSpec,
    video_path: str,
    describe: bool = False,
    ground: bool = False,
    ground_turns: int = 0,
    ground_conversations: int = 1,
    object_turns: bool = False,
) -> list[dict[str, Any]]:
    """LLaVA-Video rows, one per question (and the video's description first, with ``describe``; its
    identification conversation after them, with ``ground``; then, with ``ground_turns``, its
    ``ground_conversations`` :func:`make_grounding` conversations of that many turns; then, with
    ``object_turns``, its :func:`make_object_turns` conversation), with the checker's fields under ``qa``."""
    rows = []
    for q in [make_description(spec)] * describe + make_questions(spec):
        rows.append({
            "id": f"{spec.id}-{q.qa_type}",
            "video": video_path,
            "conversations": [{"from": "human", "value": f"<image>\n{q.question}"}, {"from": "gpt", "value": q.answer}],
            "duration": spec.duration,
            **evidence_field(q.evidence),
            "qa": {"qa_type": q.qa_type, "answer": q.answer, "options": list(q.options), "tolerance": q.tolerance,
                   "split": spec.split, "seed": spec.seed},
        })  # fmt: skip
    if ground:
        turns = make_identification(spec)
        rows.append({
            "id": f"{spec.id}-identify",
            "video": video_path,
            "conversations": _conversation(turns),
            "duration": spec.duration,
            "qa": {"qa_type": "identify", "answers": [q.answer for q in turns], "split": spec.split, "seed": spec.seed},
        })  # fmt: skip
    conversations = [(f"ground{i}", "ground", make_grounding(spec, ground_turns, i)) for i in range(ground_conversations if ground_turns else 0)]
    if object_turns:
        conversations.append(("objects", "objects", make_object_turns(spec)))
    rows += [conversation_row(spec, video_path, suffix, kind, turns) for suffix, kind, turns in conversations]
    return rows


def conversation_row(spec: VideoSpec, video_path: str, suffix: str, kind: str, turns: list[Question]) -> dict[str, Any]:
    """One multi-turn LLaVA-Video row about ``spec`` (id ``<spec.id>-<suffix>``), each turn's checker fields listed
    under ``qa`` (``qa_type`` is ``kind``, e.g. "ground"): the row :func:`rows_for` writes per conversation."""
    return {
        "id": f"{spec.id}-{suffix}",
        "video": video_path,
        "conversations": _conversation(turns),
        "duration": spec.duration,
        **evidence_field(*(q.evidence for q in turns)),
        "qa": {"qa_type": kind, "types": [q.qa_type for q in turns], "answers": [q.answer for q in turns],
               "options": [list(q.options) for q in turns], "tolerances": [q.tolerance for q in turns],
               "evidences": [[list(span) for span in q.evidence] for q in turns], "split": spec.split, "seed": spec.seed},
    }  # fmt: skip


def evidence_field(*evidences: Iterable[Sequence[float]]) -> dict[str, Any]:
    """A row's ``evidence`` field: the (start, end) seconds of all its turns' evidence, sorted, each once
    (``{}`` when there is none). ``recot train`` trains the selector to keep those stretches of the video
    (``selector_loss_weight``)."""
    spans = sorted({(float(a), float(b)) for spans in evidences for a, b in spans})
    return {"evidence": [list(span) for span in spans]} if spans else {}


def _conversation(turns: list[Question]) -> list[dict[str, str]]:
    """LLaVA turns of ``turns``, the video marker on the first question only."""
    out = []
    for i, q in enumerate(turns):
        out += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + q.question}, {"from": "gpt", "value": q.answer}]
    return out


def turns_of_type(rows: Iterable[dict[str, Any]], qa_type: str, suffix: str = "idonly") -> list[dict[str, Any]]:
    """Each multi-turn row of ``rows`` (``rows_for``'s ``ground`` and ``objects`` conversations) cut to its turns of
    ``qa_type``, in order, as a row of its own (id ``<id>-<suffix>``; the video marker moves to the first kept turn);
    rows with none of them are left out, single-question rows too. The default model's curriculum trains on
    ``turns_of_type(ground_rows, "identify")`` first: the object at a time, without the scenes it learns first."""
    out = []
    for row in rows:
        types = row["qa"].get("types")
        keep = [k for k, kind in enumerate(types or []) if kind == qa_type]
        if not keep:
            continue
        turns = [
            Question(qa_type, row["conversations"][2 * k]["value"].removeprefix("<image>\n"), row["conversations"][2 * k + 1]["value"])
            for k in keep
        ]  # fmt: skip
        listed = ("types", "answers", "options", "tolerances", "evidences")
        qa = {key: [value[k] for k in keep] if key in listed else value for key, value in row["qa"].items()}
        cut = {key: value for key, value in row.items() if key != "evidence"}
        cut.update(id=f"{row['id']}-{suffix}", conversations=_conversation(turns), qa=qa)
        out.append({**cut, **evidence_field(*qa.get("evidences", ()))})
    return out


@dataclass
class DatasetSummary:
    """What :func:`write_dataset` did: videos written and skipped, rows, and where the files are."""

    split: str
    videos_written: int
    videos_skipped: int
    rows: int
    rows_file: Path
    manifest_file: Path
    frames_written: int


def write_dataset(
    out: str | Path,
    split: str,
    count: int,
    first: int = 0,
    min_minutes: float = 5.0,
    max_minutes: float = 120.0,
    fps: float = 1.0,
    size: int = 128,
    progress: bool = True,
    describe: bool = False,
    ground: bool = False,
    ground_turns: int = 0,
    ground_conversations: int = 1,
    object_turns: bool = False,
) -> DatasetSummary:
    """Write ``count`` videos of ``split`` (its videos ``first ..``) and their questions under ``out``.

    Layout: ``out/videos/<split>/<id>.mp4``, ``out/<split>.json`` (rows, video
    paths relative to ``out``) and ``out/<split>.videos.jsonl`` (each video's
    spec: scenes and events). A video already there is kept (reruns resume;
    its content depends only on the seed and these settings, which are recorded
    in the manifest). Every file is written atomically. ``describe`` adds each
    video's :func:`make_description` row, ``ground`` its :func:`make_identification`
    conversation, ``ground_turns`` its ``ground_conversations`` :func:`make_grounding` conversations and
    ``object_turns`` its :func:`make_object_turns` conversation (training data).
    """
    from tqdm import tqdm

    if ground_turns < 0 or ground_conversations < 1:  # before any video is written
        raise ValueError(f"ground_turns must be >= 0 and ground_conversations >= 1, got {ground_turns}, {ground_conversations}")
    root = Path(out)
    seeds = split_seeds(split, count, first)
    specs = [make_video_spec(s, min_minutes, max_minutes, fps, size) for s in seeds]
    todo = [s for s in specs if not (root / video_relpath(s)).is_file()]
    total = sum(s.num_frames for s in todo)
    written = 0
    with tqdm(total=total, desc=f"{split} videos", unit="frame", disable=not progress) as bar:
        for spec in todo:
            write_video(spec, root / video_relpath(spec), on_frames=bar.update)
            written += spec.num_frames
    rows = [
        row
        for spec in specs
        for row in rows_for(spec, video_relpath(spec), describe, ground, ground_turns, ground_conversations, object_turns)
    ]
    rows_file = root / f"{split}.json"
    manifest = root / f"{split}.videos.jsonl"
    atomic_write_text(rows_file, json.dumps(rows, indent=1) + "\n")
    atomic_write_text(manifest, "".join(json.dumps(s.to_json()) + "\n" for s in specs))
    return DatasetSummary(split, len(todo), len(specs) - len(todo), len(rows), rows_file, manifest, written)


def video_relpath(spec: VideoSpec) -> str:
    """Where :func:`write_dataset` puts ``spec``'s video, relative to its ``out``: the rows' ``video`` field."""
    # Settings in the name: a rerun with other settings writes new files instead of reusing mismatched ones.
    minutes = int(spec.duration) // 60
    return f"videos/{spec.split}/{spec.id}-{minutes}m-{spec.size}px-{spec.fps:g}fps.mp4"


def iter_specs(manifest: str | Path) -> Iterator[VideoSpec]:
    """The video specs of a ``<split>.videos.jsonl`` manifest."""
    with open(manifest) as handle:
        for line in handle:
            if line.strip():
                yield VideoSpec.from_json(json.loads(line))
