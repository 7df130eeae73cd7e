"""Video-specific dataset pruning: drop training samples that teach little (design and reasons: ``docs/pruning.md``).

Signals, per sample (scalars cached in a JSONL score file, so a rerun resumes):

* **duplicate**: its video is a near-duplicate of an earlier sample's (cosine of
  time-resampled compressed-token embeddings >= ``duplicate_cos``, read from the
  encode cache) *and* it asks the same question (character-trigram Jaccard >=
  ``duplicate_question``).
* **static**: the video's ReCoT tokens barely change from group to group (the
  largest per-position ``1 - cos`` between consecutive groups, averaged, below
  ``static_ratio`` x the data set's median): one frame would answer its questions.
* **text-answerable**: a text-only pass of the LLM (no video) already gives the
  reference answer a geometric-mean token probability >= ``text_prob``.

Selection: flagged samples are dropped (a stratum of task type x duration keeps
at least ``stratum_floor`` of its samples, the least redundant ones); if more than
``budget`` of the data remain, samples are dropped from the largest stratum
first, most redundant first, until the budget holds. Ties break by a seeded hash,
so the result is a deterministic function of the data, the model and the seed.
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
REASONS = ("duplicate", "text-answerable", "static", "budget")
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
    duplicate_cos: float = 0.98
    duplicate_question: float = 0.8
    static_ratio: float = 0.2
    text_prob: float = 0.8
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
    """The verdict on one sample, as written to the decisions JSONL."""

    index: int
    id: str
    where: str
    stratum: str
    kept: bool
    reasons: list[str]
    detail: dict[str, Any] = field(default_factory=dict)


def question_of(sample: Sample) -> str:
    """The first question without the media marker, lower-cased and with spaces collapsed."""
    return " ".join(sample.turns[0][0].replace("<image>", " ").lower().split())


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
    if seconds is None:
        return "no video"
    return next(name for limit, name in DURATION_BUCKETS if seconds < limit)


def video_embedding(tokens: torch.Tensor) -> np.ndarray:
    """(G, P, D) compressed tokens -> unit vector (EMBED_STEPS * D): per-group mean token, resampled in time."""
    means = tokens.float().mean(dim=1)  # (G, D)
    if means.shape[0] == 1:
        resampled = means.expand(EMBED_STEPS, -1)
    else:
        resampled = torch.nn.functional.interpolate(
            means.t()[None], size=EMBED_STEPS, mode="linear", align_corners=True
        )[0].t()
    flat = resampled.flatten().double().numpy()
    return flat / max(np.linalg.norm(flat), 1e-12)


def temporal_change(tokens: torch.Tensor) -> float:
    """How much the most changing token changes: per pair of consecutive groups the largest ``1 - cos`` between
    the tokens at the same position, averaged over the pairs; 0 for a still or one-group video.

    The largest, not the mean over positions: a small object moving in a still scene changes a few tokens,
    and that is temporal information a mean over the whole frame would dilute away.
    """
    tokens = tokens.float()
    if tokens.shape[0] < 2:
        return 0.0
    cos = torch.nn.functional.cosine_similarity(tokens[1:], tokens[:-1], dim=2)  # (G - 1, P)
    return float((1 - cos).clamp(min=0).amax(dim=1).mean())


def text_only_probability(model, processor, sample: Sample) -> float:
    """Geometric-mean probability the LLM gives the first reference answer from the question alone (no video)."""
    question = sample.turns[0][0].replace("<image>\n", "").replace("<image>", "").strip() or " "
    text = Sample(sample.file, sample.line, sample.id, None, None, sample.system, [(question, sample.turns[0][1])], {})
    tok = tokenize_conversation(text, processor)
    ids = tok.input_ids.to(model.device)[None]
    with torch.no_grad():
        logits = model.language_model(input_ids=ids).logits[0, :-1].float()
    targets = tok.labels.to(model.device)[1:]
    picked = targets != -100
    logp = torch.log_softmax(logits[picked], dim=-1).gather(1, targets[picked][:, None])
    return float(logp.mean().exp())


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
        self.scores[score.key] = score
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(score.__dict__) + "\n")


def _tie_break(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "big")


def select(
    samples: list[Sample],
    scores: list[SampleScores],
    embeddings: dict[int, np.ndarray],
    options: PruneOptions,
) -> list[Decision]:
    """Decide for every sample (see the module docstring); pure function of its inputs."""
    n = len(samples)
    strata = [f"{task_type(s)} | {duration_bucket(sc.duration)}" for s, sc in zip(samples, scores, strict=False)]
    decisions = [Decision(i, s.id, s.where, strata[i], True, []) for i, s in enumerate(samples)]

    # (a) duplicates: a near-duplicate video asked the same question by an earlier sample.
    with_video = sorted(embeddings)
    if with_video:
        matrix = np.stack([embeddings[i] for i in with_video])
        questions = {i: question_of(samples[i]) for i in with_video}
        for row, i in enumerate(with_video):
            if row == 0:
                continue
            cos = matrix[:row] @ matrix[row]
            for col in np.flatnonzero(cos >= options.duplicate_cos):
                j = with_video[col]
                if (
                    "duplicate" not in decisions[j].reasons
                    and trigram_jaccard(questions[i], questions[j]) >= options.duplicate_question
                ):
                    decisions[i].reasons.append("duplicate")
                    decisions[i].detail["duplicate_of"] = samples[j].where
                    decisions[i].detail["video_cos"] = round(float(cos[col]), 4)
                    break
    # (b) static video: token change far below the data set's median.
    changes = [sc.temporal_change for sc in scores if sc.temporal_change is not None]
    median = float(np.median(changes)) if changes else 0.0
    for d, sc in zip(decisions, scores, strict=False):
        if sc.temporal_change is not None:
            d.detail["temporal_change"] = round(sc.temporal_change, 6)
            if sc.temporal_change < options.static_ratio * median:
                d.reasons.append("static")
    # (c) text-answerable.
    for d, sc in zip(decisions, scores, strict=False):
        if sc.text_prob is not None:
            d.detail["text_prob"] = round(sc.text_prob, 4)
            if sc.text_prob >= options.text_prob:
                d.reasons.append("text-answerable")

    def redundancy(i: int) -> tuple:
        d, sc = decisions[i], scores[i]
        flags = sum(r in d.reasons for r in REASONS[:3])
        stillness = 1.0 - (sc.temporal_change or 0.0) / median if median > 0 and sc.temporal_change is not None else 0.0
        return (flags, (sc.text_prob or 0.0) + stillness, _tie_break(options.seed, i))

    # Flagged samples go, but every stratum keeps its floor (its least redundant samples).
    sizes = Counter(strata)
    by_stratum: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        by_stratum.setdefault(s, []).append(i)
    for stratum, members in by_stratum.items():
        floor = math.ceil(options.stratum_floor * sizes[stratum])
        flagged = sorted((i for i in members if decisions[i].reasons), key=redundancy, reverse=True)
        unflagged = len(members) - len(flagged)
        for rank, i in enumerate(flagged):
            if unflagged + (len(flagged) - rank - 1) >= floor:
                decisions[i].kept = False
            else:
                decisions[i].detail["kept_for_balance"] = True
    # Over budget: drop from the largest stratum, most redundant first.
    target = max(1, math.floor(options.budget * n + 1e-9))
    kept_by: dict[str, list[int]] = {
        s: sorted((i for i in m if decisions[i].kept), key=redundancy) for s, m in by_stratum.items()
    }
    kept = sum(len(v) for v in kept_by.values())
    while kept > target:
        largest = max(kept_by, key=lambda s: (len(kept_by[s]), s))
        i = kept_by[largest].pop()
        decisions[i].kept = False
        decisions[i].reasons.append("budget")
        kept -= 1
    return decisions


@dataclass
class PruneResult:
    """Everything :func:`prune_file` decided, for the report."""

    decisions: list[Decision]
    bad: list[BadRow]
    options: PruneOptions


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
    sampling_id = f"{options.fps}|{options.max_frames}"
    scores: list[SampleScores] = []
    embeddings: dict[int, np.ndarray] = {}
    per_video: dict[str, tuple[float, float, np.ndarray]] = {}
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
        raise DataError(f"{data}: no usable row ({len(bad)} bad rows; the first: {bad[0] if bad else None})")
    sample_scores, embeddings = score_samples(samples, options, model_dir, cache_dir, ScoreCache(scores_path))
    result = PruneResult(select(samples, sample_scores, embeddings, options), bad, options)
    kept_rows = [raw for raw, d in zip(raws, result.decisions, strict=False) if d.kept]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".jsonl":
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept_rows))
    else:
        atomic_write_text(out, json.dumps(kept_rows, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(
        decisions_path, "".join(json.dumps(d.__dict__, ensure_ascii=False) + "\n" for d in result.decisions)
    )
    atomic_write_text(report, render_report(data, out, result))
    kept = sum(d.kept for d in result.decisions)
    return (
        f"kept {kept} of {len(samples)} samples ({kept / len(samples):.1%}); {len(bad)} bad rows; "
        f"kept rows in {out}, decisions in {decisions_path}, report in {report}"
    )


def render_report(data: Path, out: Path, result: PruneResult) -> str:
    """The Markdown report: totals, drops by reason, strata before/after, examples, bad rows."""
    ds = result.decisions
    kept = [d for d in ds if d.kept]
    o = result.options
    lines = [
        f"# Pruning report: {data.name}",
        "",
        (
            f"Kept **{len(kept)} of {len(ds)}** usable samples ({len(kept) / len(ds):.1%}) into `{out}`; "
            f"budget {o.budget:g}; {len(result.bad)} bad rows left out."
        ),
        "",
        (
            f"Thresholds: duplicate video cosine >= {o.duplicate_cos}, same question (trigram Jaccard >= "
            f"{o.duplicate_question}); static if token change < {o.static_ratio} x median; text-answerable if the "
            f"text-only answer probability >= {o.text_prob}; every stratum keeps >= {o.stratum_floor:.0%}."
        ),
        "",
        "## Dropped, by first reason",
        "",
        "| reason | dropped | flagged (all) |",
        "|---|---:|---:|",
    ]
    for reason in REASONS:
        dropped = sum(1 for d in ds if not d.kept and d.reasons and d.reasons[0] == reason)
        flagged = sum(1 for d in ds if reason in d.reasons)
        lines.append(f"| {reason} | {dropped} | {flagged} |")
    lines += ["", "## Strata (task type | duration)", "", "| stratum | before | kept |", "|---|---:|---:|"]
    for stratum, count in sorted(Counter(d.stratum for d in ds).items()):
        lines.append(f"| {stratum} | {count} | {sum(1 for d in kept if d.stratum == stratum)} |")
    lines += ["", "## Examples of dropped samples", ""]
    for reason in REASONS:
        examples = [d for d in ds if not d.kept and d.reasons and d.reasons[0] == reason][:5]
        for d in examples:
            lines.append(f"- `{d.where}` ({d.id}): {', '.join(d.reasons)}; {json.dumps(d.detail)}")
    if result.bad:
        lines += ["", "## Bad rows", ""] + [f"- `{b}`" for b in result.bad]
    return "\n".join(lines) + "\n"
