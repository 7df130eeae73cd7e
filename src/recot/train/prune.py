"""Video-specific dataset pruning: drop training samples that teach little (design and reasons: ``docs/pruning.md``).

Signals, per sample (scalars cached in a JSONL score file, so a rerun resumes):

* **duplicate**: its video looks like an earlier sample's (cosine of the time-resampled
  compressed tokens, spatial layout kept, >= ``duplicate_cos``) *and* moves like it
  (cosine of the tokens minus their time mean >= ``duplicate_motion_cos``) *and* it asks
  the same questions (every turn's: the same numbers, and character-trigram Jaccard >= ``duplicate_question``). The same look
  with another motion is only ``near-duplicate`` (weak evidence, see below).
* **static**: the video's ReCoT tokens never move away from where they started (the
  largest ``1 - cos`` between any two groups, at any token position) and that span lies
  below a natural break of the data set's spans (the widest gap, at least
  ``static_gap`` x, among spans under ``static_ratio`` x the median): noise does not
  accumulate over a clip, slow motion does. Spans under the cap but above the break
  are only ``low-motion`` (weak evidence).
* **text-answerable**: a text-only pass of the LLM (no video) already gives the whole
  reference answer (the product of its tokens' probabilities) a probability >= ``text_prob``;
  >= ``text_weak`` is only ``text-likely`` (weak evidence).

Selection: samples with a strong flag (the three above) are dropped (a stratum of task
type x duration keeps at least ``stratum_floor`` of its samples, the least redundant
ones). ``budget`` is an upper bound on the kept share: while more are kept, samples with
weak evidence only are dropped, from the largest stratum first, most redundant first.
A sample with no flag at all is never dropped; when the flagged samples do not reach
the budget, the budget is reported as not met. Ties break by a seeded hash, so the
result is a deterministic function of the data, the model and the seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recot.train.data import BadRow, DataError, Sample, check_media, parse_row, read_rows, tokenize_conversation

#: Time points a video's embedding is resampled to (so videos of different lengths compare).
EMBED_STEPS = 8
#: Token positions per time point in the embedding (more are average-pooled in sequence order).
EMBED_POSITIONS = 16
#: Channels per token in the embedding (wider tokens go through a fixed seeded random projection).
EMBED_DIMS = 64
#: Groups compared pairwise for the temporal span (longer videos: evenly spaced groups).
SPAN_GROUPS = 32
#: Version of the per-sample scores; part of the score-cache key, so a changed signal is recomputed.
SCORE_VERSION = 3
#: Reasons that drop a sample on their own (strong evidence).
STRONG_REASONS = ("duplicate", "text-answerable", "static")
#: Reasons that only make a sample a candidate when the budget asks for more drops (weak evidence).
WEAK_REASONS = ("near-duplicate", "text-likely", "low-motion")
REASONS = (*STRONG_REASONS, *WEAK_REASONS, "budget")
DURATION_BUCKETS = ((60.0, "< 1 min"), (300.0, "1-5 min"), (1800.0, "5-30 min"), (math.inf, ">= 30 min"))


@dataclass
class PruneOptions:
    """Thresholds and run settings of :func:`prune_file` (defaults discussed in ``docs/pruning.md``)."""

    budget: float = 1.0
    fps: float = 1.0
    max_frames: int = 64
    seed: int = 0
    strict: bool = False
    progress: bool = True
    duplicate_cos: float = 0.9
    duplicate_motion_cos: float = 0.8
    duplicate_question: float = 0.8
    static_ratio: float = 0.1
    static_gap: float = 5.0
    text_prob: float = 0.8
    text_weak: float = 0.5
    stratum_floor: float = 0.1


@dataclass
class SampleScores:
    """What the pruner measured about one sample (``None`` where it does not apply: no video, no text pass)."""

    key: str
    temporal_change: float | None
    duration: float | None
    text_prob: float | None


@dataclass
class Decision:
    """The verdict on one sample, as written to the decisions JSONL.

    ``reasons`` lists every flag the sample carries, strong or weak, also for a kept
    sample (a weak flag alone does not drop it; ``budget`` is added when the budget did).
    """

    index: int
    id: str
    where: str
    stratum: str
    kept: bool
    reasons: list[str]
    detail: dict[str, Any] = field(default_factory=dict)


def question_of(sample: Sample) -> str:
    """The sample's questions (every user turn, joined by `` | ``) without the media marker, lower-cased and with
    spaces collapsed. All turns, not the first: two conversations that open alike and go on to ask other things
    (a curriculum's subset of a conversation's turns, say) are different lessons."""
    return " | ".join(" ".join(q.replace("<image>", " ").lower().split()) for q, _ in sample.turns)


def same_question(a: str, b: str, threshold: float) -> bool:
    """Whether two :func:`question_of` strings ask the same thing: the same numbers, in order, and character-trigram
    Jaccard >= ``threshold``.

    The numbers are compared exactly because in video questions they are what the question is about: "Which scene
    is shown at 00:41?" and "... at 01:56?" share most trigrams (Jaccard 0.6-0.9 as the clocks differ by more or fewer
    digits) but ask about two moments, and a time-grounding set asks the same template at many times of one video.
    """
    return re.findall(r"\d+", a) == re.findall(r"\d+", b) and trigram_jaccard(a, b) >= threshold


def trigram_jaccard(a: str, b: str) -> float:
    """Jaccard similarity of the character-trigram sets of two strings (1.0 for two equal strings)."""
    if a == b:
        return 1.0
    ta = {a[i : i + 3] for i in range(max(len(a) - 2, 1))}
    tb = {b[i : i + 3] for i in range(max(len(b) - 2, 1))}
    return len(ta & tb) / len(ta | tb)


def task_type(sample: Sample) -> str:
    """The row's ``task``/``task_type``/``question_type``/``data_source`` field, else multiple-choice vs open."""
    for name in ("task", "task_type", "question_type", "data_source"):
        if isinstance(sample.extra.get(name), str) and sample.extra[name]:
            return sample.extra[name]
    answer = sample.turns[0][1].strip()
    if re.fullmatch(r"\(?[A-Ha-h][).:]?(\s.*)?", answer) and re.search(r"(^|\n)\s*\(?[A-H][).:]", sample.turns[0][0]):
        return "multiple-choice"
    return "open-ended"


def duration_bucket(seconds: float | None) -> str:
    """The duration bucket of a video of ``seconds`` (``"no video"`` for ``None``)."""
    if seconds is None:
        return "no video"
    return next(name for limit, name in DURATION_BUCKETS if seconds < limit)


def video_embedding(tokens: torch.Tensor) -> np.ndarray:
    """(G, P, D) compressed tokens -> (2, EMBED_STEPS * P' * D') unit vectors: appearance and motion.

    The tokens are reduced to at most ``EMBED_POSITIONS`` positions (average-pooled in
    sequence order) and ``EMBED_DIMS`` channels (a fixed random projection, seed 0, which
    keeps cosines), and resampled linearly to ``EMBED_STEPS`` time points; row 0 is
    that, flattened (what the video looks like, where, and when), row 1 the same minus
    its mean over time (how it moves). Two re-encodes of one clip agree on both; two
    clips of one scene with different motion agree on the first only.
    """
    t = tokens.detach().float().cpu()
    if t.shape[1] > EMBED_POSITIONS:
        t = torch.nn.functional.adaptive_avg_pool1d(t.transpose(1, 2), EMBED_POSITIONS).transpose(1, 2)
    if t.shape[2] > EMBED_DIMS:
        generator = torch.Generator().manual_seed(0)
        t = t @ (torch.randn(t.shape[2], EMBED_DIMS, generator=generator) / EMBED_DIMS**0.5)
    flat = t.flatten(1)  # (G, P' * D')
    if flat.shape[0] == 1:
        resampled = flat.expand(EMBED_STEPS, -1)
    else:
        resampled = torch.nn.functional.interpolate(
            flat.t()[None], size=EMBED_STEPS, mode="linear", align_corners=True
        )[0].t()
    rows = np.stack([resampled.flatten().double().numpy(), (resampled - resampled.mean(0)).flatten().double().numpy()])
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def temporal_change(tokens: torch.Tensor) -> float:
    """How far the video's tokens ever get from where they were: the largest ``1 - cos`` between the tokens at
    the same position in any two groups (at most ``SPAN_GROUPS`` evenly spaced ones); 0 for a one-group video.

    The largest over positions: a small object moving in a still scene changes a few tokens, and a mean
    over the frame would dilute that away. Over *any two* groups, not consecutive ones: camera noise and
    compression flicker make every pair differ a little, by the same little, while motion, however
    slow, adds up over the clip.
    """
    t = tokens.detach().float()
    if t.shape[0] < 2:
        return 0.0
    if t.shape[0] > SPAN_GROUPS:
        t = t[torch.linspace(0, t.shape[0] - 1, SPAN_GROUPS).round().long()]
    unit = torch.nn.functional.normalize(t, dim=2).transpose(0, 1)  # (P, G, D)
    cos = unit @ unit.transpose(1, 2)  # (P, G, G)
    return float((1 - cos).clamp(min=0).amax())


#: Spans under this share of the static cap are all alike for :func:`static_threshold` (rounding, not motion).
STILL_FLOOR = 1e-3


def static_threshold(changes: list[float], ratio: float, gap: float) -> float:
    """The temporal span under which a video counts as static, read off the data set's spans.

    Spans below ``ratio`` x the median are candidates; among them (and the next span up)
    the widest gap between neighbours, as a ratio, is the break between still clips
    (whose span is noise) and moving ones, if it is at least ``gap``. Returns the
    geometric middle of that gap (capped at ``ratio`` x median), or 0.0 when there is
    no such break (then nothing is static).

    Spans under ``STILL_FLOOR`` x the cap count as that floor: a ratio between two spans at
    rounding level (an exact 0 against 1e-7, a codec's keyframe pulse) says nothing about
    motion. Without the floor, the bit-exact stills of a data set made the widest gap with
    the first still above 0, and stills with camera noise came out on the moving side.
    """
    if not changes:
        return 0.0
    cap = ratio * float(np.median(changes))
    floor = max(STILL_FLOOR * cap, 1e-9)
    values = sorted(max(c, floor) for c in changes)
    below = [v for v in values if v < cap]
    if not below:
        return 0.0
    nxt = values[len(below)] if len(below) < len(values) else None
    chain = below + ([nxt] if nxt is not None else [])
    best, where = 1.0, None
    for k in range(len(chain) - 1):
        if chain[k + 1] / chain[k] > best:
            best, where = chain[k + 1] / chain[k], k
    if where is None or best < gap:
        return 0.0
    return min(math.sqrt(chain[where] * chain[where + 1]), cap)


def text_only_probability(model, processor, sample: Sample) -> float:
    """Probability the LLM gives the whole first reference answer (its closing end-of-turn token included) from the
    question alone, with no video: the product of the answer tokens' probabilities.

    The whole answer's probability, not a mean per token, so that the score does not depend on how the tokenizer
    cuts the answer. A per-token mean flags a guess: with a byte tokenizer, "ocean" guessed one time in three (0.3
    for its first byte, the other bytes and the end of turn near-certain after it) scores 0.3 ** (1/6) = 0.82.
    """
    question = sample.turns[0][0].replace("<image>\n", "").replace("<image>", "").strip() or " "
    text = Sample(sample.file, sample.line, sample.id, None, None, sample.system, [(question, sample.turns[0][1])], {})
    tok = tokenize_conversation(text, processor)
    ids = tok.input_ids.to(model.device)[None]
    with torch.no_grad():
        logits = model.language_model(input_ids=ids).logits[0, :-1].float()
    targets = tok.labels.to(model.device)[1:]
    picked = targets != -100
    logp = torch.log_softmax(logits[picked], dim=-1).gather(1, targets[picked][:, None])
    return float(logp.sum().exp())


class ScoreCache:
    """Per-sample scores in a JSONL file, appended as they are computed; a torn last line is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scores: dict[str, SampleScores] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    s = SampleScores(**json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    continue
                self.scores[s.key] = s

    def add(self, score: SampleScores) -> None:
        """Remember ``score`` and append it to the file."""
        self.scores[score.key] = score
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(score.__dict__) + "\n")


def _tie_break(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big")


@dataclass
class Selection:
    """The decisions of :func:`select` and how the budget went."""

    decisions: list[Decision]
    target: int
    static_threshold: float

    @property
    def kept(self) -> int:
        """How many samples are kept."""
        return sum(d.kept for d in self.decisions)

    @property
    def budget_met(self) -> bool:
        """Whether at most ``target`` samples are kept."""
        return self.kept <= self.target


def flag_duplicates(
    samples: list[Sample], embeddings: dict[int, np.ndarray], options: PruneOptions, decisions: list[Decision]
) -> None:
    """Mark ``duplicate`` / ``near-duplicate`` samples in ``decisions`` (compared with earlier, non-duplicate ones).

    A later sample is compared with every earlier sample that is not itself a duplicate,
    so a cluster of copies keeps its first member and the others point to it.
    """
    with_video = sorted(embeddings)
    if not with_video:
        return
    looks = np.stack([embeddings[i][0] for i in with_video])
    moves = np.stack([embeddings[i][1] for i in with_video])
    questions = {i: question_of(samples[i]) for i in with_video}
    for row, i in enumerate(with_video[1:], start=1):
        look = looks[:row] @ looks[row]
        move = moves[:row] @ moves[row]
        near = None
        for col in np.flatnonzero(look >= options.duplicate_cos):
            j = with_video[col]
            if "duplicate" in decisions[j].reasons:
                continue
            if not same_question(questions[i], questions[j], options.duplicate_question):
                continue
            if move[col] >= options.duplicate_motion_cos:
                decisions[i].reasons.append("duplicate")
                # where and id: in a one-line JSON list every row's where is FILE:1
                decisions[i].detail.update(duplicate_of=samples[j].where, duplicate_of_id=samples[j].id,
                                           video_cos=round(float(look[col]), 4), motion_cos=round(float(move[col]), 4))  # fmt: skip
                near = None
                break
            if near is None:
                near = (j, float(look[col]), float(move[col]))
        if near is not None:
            j, a, m = near
            decisions[i].reasons.append("near-duplicate")
            decisions[i].detail.update(similar_to=samples[j].where, similar_to_id=samples[j].id, video_cos=round(a, 4),
                                       motion_cos=round(m, 4))  # fmt: skip


def select(
    samples: list[Sample],
    scores: list[SampleScores],
    embeddings: dict[int, np.ndarray],
    options: PruneOptions,
) -> Selection:
    """Decide for every sample (see the module docstring); a pure function of its inputs.

    ``embeddings`` maps a sample's index to its :func:`video_embedding` (samples without
    video have none). Only flagged samples are ever dropped.
    """
    n = len(samples)
    strata = [f"{task_type(s)} | {duration_bucket(sc.duration)}" for s, sc in zip(samples, scores, strict=True)]
    decisions = [Decision(i, s.id, s.where, strata[i], True, []) for i, s in enumerate(samples)]

    # (a) duplicates and near-duplicates.
    flag_duplicates(samples, embeddings, options, decisions)
    # (b) static: span below the data set's natural break; low motion: below the cap only.
    changes = [sc.temporal_change for sc in scores if sc.temporal_change is not None]
    median = float(np.median(changes)) if changes else 0.0
    threshold = static_threshold(changes, options.static_ratio, options.static_gap)
    for d, sc in zip(decisions, scores, strict=True):
        if sc.temporal_change is not None:
            d.detail["temporal_change"] = round(sc.temporal_change, 6)
            if sc.temporal_change < threshold:
                d.reasons.append("static")
            elif sc.temporal_change < options.static_ratio * median:
                d.reasons.append("low-motion")
    # (c) text-answerable and text-likely.
    for d, sc in zip(decisions, scores, strict=True):
        if sc.text_prob is not None:
            d.detail["text_prob"] = round(sc.text_prob, 4)
            if sc.text_prob >= options.text_prob:
                d.reasons.append("text-answerable")
            elif sc.text_prob >= options.text_weak:
                d.reasons.append("text-likely")

    def redundancy(i: int) -> tuple:
        d, sc = decisions[i], scores[i]
        strong = sum(r in d.reasons for r in STRONG_REASONS)
        weak = sum(r in d.reasons for r in WEAK_REASONS)
        change = sc.temporal_change
        stillness = min(max(1.0 - change / median, 0.0), 1.0) if median > 0 and change is not None else 0.0
        similarity = d.detail.get("video_cos", 0.0) if "near-duplicate" in d.reasons else 0.0
        return (strong, weak, (sc.text_prob or 0.0) + stillness + similarity, _tie_break(options.seed, i))

    # Strongly flagged samples go, but every stratum keeps its floor (its least redundant samples).
    sizes = Counter(strata)
    by_stratum: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        by_stratum.setdefault(s, []).append(i)
    for stratum, members in by_stratum.items():
        floor = math.ceil(options.stratum_floor * sizes[stratum])
        flagged = sorted(
            (i for i in members if any(r in decisions[i].reasons for r in STRONG_REASONS)), key=redundancy, reverse=True
        )
        unflagged = len(members) - len(flagged)
        for rank, i in enumerate(flagged):
            if unflagged + (len(flagged) - rank - 1) >= floor:
                decisions[i].kept = False
            else:
                decisions[i].detail["kept_for_balance"] = True
    # Over budget: drop weakly flagged samples, from the largest stratum, most redundant first.
    target = max(1, math.floor(options.budget * n + 1e-9))
    kept_by = {s: [i for i in m if decisions[i].kept] for s, m in by_stratum.items()}
    candidates = {
        s: sorted(
            (i for i in m if not decisions[i].detail.get("kept_for_balance") and decisions[i].reasons), key=redundancy
        )  # fmt: skip
        for s, m in kept_by.items()
    }
    kept = sum(len(v) for v in kept_by.values())
    while kept > target:
        open_strata = [s for s in kept_by if candidates[s]]
        if not open_strata:
            break  # every remaining sample is unflagged (or kept for balance): the budget is not met
        largest = max(open_strata, key=lambda s: (len(kept_by[s]), s))
        i = candidates[largest].pop()
        kept_by[largest].remove(i)
        decisions[i].kept = False
        decisions[i].reasons.append("budget")
        kept -= 1
    return Selection(decisions, target, threshold)


@dataclass
class PruneResult:
    """Everything :func:`prune_file` decided, for the report."""

    selection: Selection
    bad: list[BadRow]
    options: PruneOptions

    @property
    def decisions(self) -> list[Decision]:
        """One decision per usable sample, in file order."""
        return self.selection.decisions


def score_samples(
    samples: list[Sample], options: PruneOptions, model_dir: Path | None, cache_dir: Path | None, cache: ScoreCache
) -> tuple[list[SampleScores], dict[int, np.ndarray]]:
    """Scores of every sample (from the cache where present) and the video embeddings (from the encode cache)."""
    from tqdm.auto import tqdm

    from recot.engine.cache import EncodingCache
    from recot.engine.chat import FrameSampling, VideoChat

    if model_dir is None:
        from recot.engine.default_model import default_model_dir

        model_dir = default_model_dir(cache_dir)
    chat = VideoChat.from_pretrained(model_dir, cache=EncodingCache(cache_dir))
    sampling = FrameSampling(fps=options.fps, max_frames=options.max_frames)
    sampling_id = f"{options.fps}|{options.max_frames}|v{SCORE_VERSION}"
    scores: list[SampleScores] = []
    embeddings: dict[int, np.ndarray] = {}
    per_video: dict[str, tuple[float, float, np.ndarray]] = {}  # media digest -> change, duration, embedding
    for i, sample in enumerate(tqdm(samples, desc="score", unit="sample", disable=not options.progress)):
        media_digest = chat.cache.file_digest(sample.media) if sample.media is not None else ""
        row_id = json.dumps([sample.system, sample.turns, sample.kind], sort_keys=True)
        key = hashlib.sha256("\0".join([row_id, media_digest, chat.model_id, sampling_id]).encode()).hexdigest()[:32]
        cached = cache.scores.get(key)
        if sample.media is not None:
            if media_digest not in per_video:  # the tokens come from the encode cache after the first run
                tokens = chat.encode(sample.media, sampling).encoded.tokens
                duration = float(chat.plan(sample.media, sampling).info.duration)
                per_video[media_digest] = (temporal_change(tokens), duration, video_embedding(tokens))
            embeddings[i] = per_video[media_digest][2]
        if cached is None:
            change, duration = per_video[media_digest][:2] if sample.media is not None else (None, None)
            cached = SampleScores(key, change, duration, text_only_probability(chat.model, chat.processor, sample))
            cache.add(cached)
        scores.append(cached)
    return scores, embeddings


def prune_file(
    data: Path,
    out: Path,
    report: Path,
    options: PruneOptions,
    media_root: Path | None = None,
    model_dir: Path | None = None,
    cache_dir: Path | None = None,
    decisions: Path | None = None,
    scores: Path | None = None,
) -> str:
    """Prune ``data`` into ``out`` (same format), write the decisions JSONL and the report; returns a summary line.

    Bad rows are reported (``FILE:LINE: reason``) and left out; with ``options.strict``
    the first one raises :class:`DataError`.
    """
    from recot.data.atomic import atomic_write_text

    data = Path(data)
    root = Path(media_root) if media_root is not None else data.parent
    decisions_path = Path(decisions) if decisions else out.with_name(out.stem + ".decisions.jsonl")
    scores_path = Path(scores) if scores else out.with_name(out.stem + ".scores.jsonl")
    raw_rows = read_rows(data)
    samples, raws, bad = [], [], []
    for line, raw in raw_rows:
        try:
            sample = parse_row(str(data), line, raw, root)
            check_media(sample, options.fps, options.max_frames)
        except DataError as exc:
            bad.append(BadRow(str(data), line, str(exc)))
            if options.strict:
                raise DataError(str(bad[-1])) from exc
            continue
        samples.append(sample)
        raws.append(raw)
    if not samples:
        raise DataError(f"{data}: no usable row" + (f" ({len(bad)} bad rows; the first: {bad[0]})" if bad else " (the file holds none)"))
    sample_scores, embeddings = score_samples(samples, options, model_dir, cache_dir, ScoreCache(scores_path))
    result = PruneResult(select(samples, sample_scores, embeddings, options), bad, options)
    kept_rows = [raw for raw, d in zip(raws, result.decisions, strict=True) if d.kept]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".jsonl":
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept_rows))
    else:
        atomic_write_text(out, json.dumps(kept_rows, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(
        decisions_path, "".join(json.dumps(d.__dict__, ensure_ascii=False) + "\n" for d in result.decisions)
    )
    atomic_write_text(report, render_report(data, out, result))
    kept = result.selection.kept
    unmet = "" if result.selection.budget_met else f" (budget {options.budget:g} not met: no other sample is flagged)"
    return (
        f"kept {kept} of {len(samples)} samples ({kept / len(samples):.1%}){unmet}; {len(bad)} bad rows; "
        f"kept rows in {out}, decisions in {decisions_path}, report in {report}"
    )


def drop_reason(decision: Decision) -> str | None:
    """Why a sample was dropped: its first strong reason, else ``"budget"``; ``None`` for a kept sample."""
    if decision.kept:
        return None
    return next((r for r in decision.reasons if r in STRONG_REASONS), "budget")


def render_report(data: Path, out: Path, result: PruneResult) -> str:
    """The Markdown report: totals, drops by reason, strata before/after, examples, bad rows."""
    ds = result.decisions
    kept = [d for d in ds if d.kept]
    o = result.options
    sel = result.selection
    budget = f"budget {o.budget:g} ({sel.target} samples)"
    if not sel.budget_met:
        budget += " **not met**: every other sample is unflagged or kept for balance, and those are never dropped"
    lines = [
        f"# Pruning report: {data.name}",
        "",
        (
            f"Kept **{len(kept)} of {len(ds)}** usable samples ({len(kept) / len(ds):.1%}) into `{out}`; "
            f"{budget}; {len(result.bad)} bad rows left out."
        ),
        "",
        (
            f"Thresholds: duplicate if the video looks alike (cosine >= {o.duplicate_cos}), moves alike (motion "
            f"cosine >= {o.duplicate_motion_cos}) and the question is the same (same numbers, trigram "
            f"Jaccard >= {o.duplicate_question}); static if the token span < {sel.static_threshold:.3g} (the data set's break, "
            f"gap >= {o.static_gap:g}x, under {o.static_ratio:g} x median), low motion if under {o.static_ratio:g} x "
            f"median; text-answerable if the text-only answer probability >= {o.text_prob} (text-likely >= "
            f"{o.text_weak}); every stratum keeps >= {o.stratum_floor:.0%}. Strong flags drop a sample; weak ones "
            f"(near-duplicate, text-likely, low-motion) only when the budget asks for more; unflagged samples stay."
        ),
        "",
        "## Dropped, by reason",
        "",
        "| reason | kind | dropped | flagged (all) |",
        "|---|---|---:|---:|",
    ]
    for reason in REASONS:
        kind = "strong" if reason in STRONG_REASONS else "weak" if reason in WEAK_REASONS else "budget"
        dropped = sum(1 for d in ds if drop_reason(d) == reason) if kind != "weak" else "-"
        flagged = sum(1 for d in ds if reason in d.reasons)
        lines.append(f"| {reason} | {kind} | {dropped} | {flagged} |")
    lines += ["", "## Strata (task type | duration)", "", "| stratum | before | kept |", "|---|---:|---:|"]
    for stratum, count in sorted(Counter(d.stratum for d in ds).items()):
        lines.append(f"| {stratum} | {count} | {sum(1 for d in kept if d.stratum == stratum)} |")
    lines += ["", "## Examples of dropped samples", ""]
    for reason in (*STRONG_REASONS, "budget"):
        examples = [d for d in ds if drop_reason(d) == reason][:5]
        for d in examples:
            lines.append(f"- `{d.where}` ({d.id}): {', '.join(d.reasons)}; {json.dumps(d.detail)}")
    if result.bad:
        lines += ["", "## Bad rows", ""] + [f"- `{b}`" for b in result.bad]
    return "\n".join(lines) + "\n"
