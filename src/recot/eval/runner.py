"""Running a benchmark: each video encoded once, questions asked, outputs resumable and sharded.

Outputs in the run folder:

- ``run.json``: the settings that determine the predictions; a rerun with other
  settings in the same folder is refused;
- ``predictions.jsonl``: one :class:`~recot.eval.api.Prediction` per line,
  appended as each question is answered. A rerun skips the questions already
  there (a line cut short by an interruption is dropped and redone), so an
  interrupted run resumed gives the same results;
- ``results.json``: the scores, the skipped questions with reasons, and
  everything needed to reproduce them (model id, recot version, sampling,
  keep ratio, budget, extractor, data file hashes). It holds no times or
  paths of the run folder, so the same evaluation always writes the same bytes;
- ``summary.md``: the scores as tables, with this run's timing.

Sharding: under ``torchrun``/``accelerate launch`` (``WORLD_SIZE`` > 1) rank
``r`` takes the videos at positions ``r, r + W, ...`` (in dataset order), appends
to ``predictions.rank<r>.jsonl``; after a barrier rank 0 merges the parts into
``predictions.jsonl`` and writes the results, identical to a one-process run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tqdm.auto import tqdm

from recot.data.atomic import atomic_write_text
from recot.eval.api import (
    DataError,
    EvalItem,
    ItemTimings,
    LoadedData,
    Prediction,
    Skipped,
    Task,
    VideoContext,
)

PREDICTIONS = "predictions.jsonl"


class RunDirError(ValueError):
    """The run folder holds a run made with other settings."""


# ----- sharding ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """This process's place among the evaluating processes (rank ``rank`` of ``world_size``)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Shard:
        """From ``RANK``/``WORLD_SIZE`` (set by torchrun and accelerate); joins a gloo process group for barriers."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        if world_size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")  # only barriers: the data goes through files
        return cls(rank, world_size)

    def barrier(self) -> None:
        """Wait for every rank (a no-op in one process)."""
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group (after the last barrier)."""
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def takes(self, position: int) -> bool:
        """Whether the video at ``position`` (in dataset order) is this rank's."""
        return position % self.world_size == self.rank


# ----- predictions on disk -------------------------------------------------------------------
class PredictionStore:
    """``predictions.jsonl`` (one process) or this rank's part file, appended line by line."""

    def __init__(self, run_dir: Path, shard: Shard = Shard()) -> None:
        self.run_dir = run_dir
        self.path = run_dir / (PREDICTIONS if shard.world_size == 1 else f"predictions.rank{shard.rank}.jsonl")
        self._repaired = False

    def parts(self) -> list[Path]:
        """Part files left by sharded runs (merged into ``predictions.jsonl`` at the end of a run)."""
        return sorted(self.run_dir.glob("predictions.rank*.jsonl"))

    def load(self) -> dict[str, Prediction]:
        """Every complete prediction in the main file and the part files, by id (the first one wins)."""
        found: dict[str, Prediction] = {}
        for path in [self.run_dir / PREDICTIONS, *self.parts()]:
            for prediction in read_predictions(path):
                found.setdefault(prediction.id, prediction)
        return found

    def append(self, prediction: Prediction) -> None:
        """Add one line (the file is repaired first if an interruption cut its last line)."""
        if not self._repaired:
            _drop_partial_line(self.path)
            self._repaired = True
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(prediction.model_dump_json() + "\n")
            f.flush()

    def merge_parts(self, order: dict[str, int]) -> None:
        """Append the part files' predictions that ``predictions.jsonl`` lacks (in dataset order); delete the parts."""
        main = self.run_dir / PREDICTIONS
        have = {p.id for p in read_predictions(main)}
        new: dict[str, Prediction] = {}
        for part in self.parts():
            for p in read_predictions(part):
                if p.id not in have:
                    new.setdefault(p.id, p)
        if new:
            _drop_partial_line(main)
            with open(main, "a", encoding="utf-8") as f:
                for p in sorted(new.values(), key=lambda p: (order.get(p.id, len(order)), p.id)):
                    f.write(p.model_dump_json() + "\n")
                f.flush()
                os.fsync(f.fileno())
        for part in self.parts():
            part.unlink()


def read_predictions(path: Path) -> list[Prediction]:
    """The complete, valid lines of a predictions file (a cut-off or unreadable line is left out with a warning)."""
    if not path.is_file():
        return []
    predictions = []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            predictions.append(Prediction.model_validate_json(line))
        except ValidationError:
            if number < len(lines):  # the last piece without a newline is an interrupted write: expected
                warnings.warn(f"{path}, line {number}: not a prediction record; it is ignored and redone", stacklevel=2)
    return predictions


def _drop_partial_line(path: Path) -> None:
    """Cut a file back to its last newline (what an interrupted append leaves behind)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


# ----- the run ------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    """What a run did: the results written (rank 0), and this process's work."""

    results: dict[str, Any] | None
    answered_now: int = 0
    encoded_videos: int = 0
    cached_videos: int = 0
    seconds: float = 0.0
    artifacts: list[Path] = field(default_factory=list)


@dataclass
class Evaluation:
    """A benchmark run: a task with its loaded data, a ``VideoChat``, how to sample and answer, and where."""

    task: Task
    data: LoadedData
    chat: Any  # recot.engine.VideoChat (imported lazily by the command)
    sampling: Any  # recot.engine.FrameSampling
    options: Any  # recot.engine.GenerationOptions
    config: dict[str, Any]
    run_dir: Path
    extractor: str = "legacy"
    seed: int = 0
    progress: bool = True
    shard: Shard = field(default_factory=Shard)

    def run(self) -> RunOutcome:
        """Answer every question not yet answered, then (rank 0) merge and write the results."""
        started = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        check_run_dir(self.run_dir, self.config)
        if self.shard.rank == 0:
            atomic_write_text(self.run_dir / "run.json", json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        self.task.attach(self.run_dir)
        store = PredictionStore(self.run_dir, self.shard)
        done = store.load()
        outcome = RunOutcome(results=None)
        skipped = self._answer(store, done, outcome)
        _write_skipped_part(self.run_dir, self.shard, skipped)
        self.shard.barrier()
        if self.shard.rank == 0:
            order = {item.id: i for i, item in enumerate(self.data.items)}
            if self.shard.world_size > 1 or store.parts():
                store.merge_parts(order)
            skipped = _merge_skipped(self.run_dir, self.shard, skipped)
            outcome.results = self._results(store, skipped, order)
            atomic_write_text(
                self.run_dir / "results.json", json.dumps(outcome.results, indent=2, sort_keys=True) + "\n"
            )
            outcome.artifacts = self.task.write_artifacts(outcome.results["scores"], self.run_dir)
        outcome.seconds = time.perf_counter() - started
        if self.shard.rank == 0:
            atomic_write_text(self.run_dir / "summary.md", render_summary(outcome.results or {}, outcome))
        self.shard.barrier()
        if self.shard.rank == 0:
            self.task.cleanup()
        return outcome

    def _answer(self, store: PredictionStore, done: dict[str, Prediction], outcome: RunOutcome) -> list[Skipped]:
        by_video = items_by_video(self.data.items)
        mine = [items for position, items in enumerate(by_video.values()) if self.shard.takes(position)]
        total = sum(len(items) for items in mine)
        finished = [done[i.id] for items in mine for i in items if i.id in done]
        tally = [sum(p.correct for p in finished), len(finished)]
        skipped: list[Skipped] = []
        bar = tqdm(total=total, initial=len(finished), desc=self.task.name, unit="question", dynamic_ncols=True,
                   disable=not self.progress or self.shard.rank != 0)  # fmt: skip
        _show_accuracy(bar, tally)
        try:
            for items in mine:
                pending = [i for i in items if i.id not in done]
                if pending:
                    skipped += self._answer_video(pending, store, outcome, bar, tally)
        finally:
            bar.close()
        return skipped

    def _answer_video(
        self, items: list[EvalItem], store: PredictionStore, outcome: RunOutcome, bar: tqdm, tally: list[int]
    ) -> list[Skipped]:
        """Encode one video (or take it from the cache) and answer its questions; failures become skips."""
        from recot.video import VideoDecodeError

        video = items[0].video
        skipped: list[Skipped] = []
        handled: set[str] = set()  # answered or skipped here
        try:
            with self.task.open_video(video) as path:
                encoding = self.chat.encode(path, self.sampling)
                outcome.encoded_videos += not encoding.cache_hit
                outcome.cached_videos += encoding.cache_hit
                context = VideoContext(path, encoding.frame_indices)
                for n, item in enumerate(items):
                    try:
                        prompt = self.task.prompt(item, context)
                        answer = self.chat.ask(encoding, prompt, self.options, system_prompt=self.task.system_prompt,
                                               answer_prefix=self.task.answer_prefix)  # fmt: skip
                    except (ValueError, OSError) as exc:
                        tqdm.write(f"recot eval: skipping {item.id}: {exc}", file=sys.stderr)
                        skipped.append(Skipped(id=item.id, video=video, reason=f"cannot answer: {exc}"))
                        handled.add(item.id)
                        bar.update(1)
                        continue
                    scored = self.task.score(answer.answer, item, self.extractor, self.seed)
                    store.append(
                        Prediction(
                            id=item.id,
                            video=video,
                            question=item.question,
                            options=item.options,
                            answer=item.answer,
                            prompt=prompt,
                            output=answer.answer,
                            extracted=scored.extracted,
                            correct=scored.correct,
                            extractor=self.extractor,
                            groups=item.groups,
                            info=scored.info,
                            frames=answer.frames,
                            visual_tokens=answer.visual_tokens,
                            visual_tokens_kept=answer.visual_tokens_kept,
                            new_tokens=answer.new_tokens,
                            cache_hit=answer.cache_hit,
                            timings=ItemTimings(
                                encode=encoding.encode_seconds if n == 0 else 0.0, answer=answer.timings.answer
                            ),
                        )  # fmt: skip
                    )
                    handled.add(item.id)
                    outcome.answered_now += 1
                    tally[0] += scored.correct
                    tally[1] += 1
                    bar.update(1)
                    _show_accuracy(bar, tally)
        except (VideoDecodeError, DataError, OSError, ValueError) as exc:
            reason = f"video unusable: {exc}"
            tqdm.write(f"recot eval: skipping the questions of {video}: {exc}", file=sys.stderr)
            for item in items:
                if item.id not in handled:
                    skipped.append(Skipped(id=item.id, video=video, reason=reason))
                    bar.update(1)
        return skipped

    def _results(self, store: PredictionStore, skipped: list[Skipped], order: dict[str, int]) -> dict[str, Any]:
        predictions = sorted((p for p in store.load().values() if p.id in order), key=lambda p: order[p.id])
        answered = {p.id for p in predictions}
        runtime = sorted((s for s in skipped if s.id in order and s.id not in answered), key=lambda s: order[s.id])
        everything = self.data.skipped + runtime
        return {
            "task": self.task.name,
            "title": self.task.title,
            "scale": self.task.score_scale,
            "scores": self.task.aggregate(predictions),
            "counts": {
                "questions": len(self.data.items),
                "answered": len(predictions),
                "skipped_questions": len(runtime),
                "rejected_rows": len(self.data.skipped),
            },
            "skipped": [s.model_dump(exclude_none=True) for s in everything],
            "config": self.config,
        }


def _show_accuracy(bar: tqdm, tally: list[int]) -> None:
    if tally[1]:
        bar.set_postfix_str(f"acc {100 * tally[0] / tally[1]:.1f}% of {tally[1]}", refresh=False)


def _write_skipped_part(run_dir: Path, shard: Shard, skipped: list[Skipped]) -> None:
    if shard.world_size > 1:
        records = [s.model_dump() for s in skipped]
        atomic_write_text(run_dir / f"skipped.rank{shard.rank}.json", json.dumps(records) + "\n")


def _merge_skipped(run_dir: Path, shard: Shard, own: list[Skipped]) -> list[Skipped]:
    """Every rank's skips of this run (rank 0's own list in one process); part files are removed,
    including any left by an interrupted run with more processes."""
    merged = own
    if shard.world_size > 1:
        merged = []
        for rank in range(shard.world_size):
            part = run_dir / f"skipped.rank{rank}.json"
            merged += [Skipped.model_validate(r) for r in json.loads(part.read_text())]
    for part in run_dir.glob("skipped.rank*.json"):
        part.unlink()
    return merged


# ----- run folder -------------------------------------------------------------------------------
def check_run_dir(run_dir: Path, config: dict[str, Any]) -> None:
    """Raise :class:`RunDirError` when ``run_dir`` holds a run made with other settings."""
    path = run_dir / "run.json"
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path} is unreadable ({exc}); use another --output") from exc
    if previous != config:
        differing = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
        raise RunDirError(
            f"{run_dir} holds a run with other settings ({', '.join(differing)} differ); use another --output"
        )


def config_digest(config: dict[str, Any]) -> str:
    """A short hash of run settings (names the default run folder, so the same command resumes)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def sampling_record(sampling: Any) -> dict[str, Any]:
    """A ``FrameSampling`` as a JSON-able dict."""
    return dataclasses.asdict(sampling)


# ----- summary ------------------------------------------------------------------------------------
def render_summary(results: dict[str, Any], outcome: RunOutcome) -> str:
    """``summary.md``: headline scores, breakdown tables, counts, settings and this run's timing."""
    if not results:
        return ""
    scale = results["scale"]
    unit = "%" if scale == "percent" else ""
    scores = results["scores"]
    lines = [
        f"# {results['title']}",
        "",
        f"Scores are {'percentages' if scale == 'percent' else 'fractions (0-1)'}.",
        "",
    ]
    lines += ["| score | value |", "|---|---:|"]
    lines += [f"| {name} | {_number(value)}{unit if name != 'random_fallbacks' and isinstance(value, float) else ''} |"
              for name, value in scores.items() if isinstance(value, (int, float))]  # fmt: skip
    for name, value in scores.items():
        if name == "grid":
            lines += ["", "## Accuracy per cell (rows: needle depth, columns: haystack frames)", ""]
            lines += ["| depth | " + " | ".join(str(f) for f in value["frames"]) + " |"]
            lines += ["|---:|" + "---:|" * len(value["frames"])]
            for depth, row in zip(value["depths_percent"], value["accuracy"], strict=False):
                lines += [f"| {depth:g}% | " + " | ".join("-" if v is None else f"{v:.2f}" for v in row) + " |"]
        elif isinstance(value, dict) and value and all(isinstance(v, dict) and "accuracy" in v for v in value.values()):
            lines += [
                "",
                f"## {name.replace('_', ' ')}",
                "",
                "| group | correct | total | accuracy |",
                "|---|---:|---:|---:|",
            ]
            lines += [
                f"| {group} | {v['correct']} | {v['total']} | {_number(v['accuracy'])} |" for group, v in value.items()
            ]
    counts = results["counts"]
    config = results["config"]
    lines += [
        "",
        "## Run",
        "",
        f"- questions: {counts['questions']}, answered: {counts['answered']}, "
        f"skipped: {counts['skipped_questions']}, rejected annotation rows: {counts['rejected_rows']}",
    ]
    for s in results["skipped"][:10]:
        lines.append(f"  - skipped {s['id']}: {s['reason']}")
    if len(results["skipped"]) > 10:
        lines.append(f"  - ... {len(results['skipped']) - 10} more in results.json")
    if "model" in config:
        model = config["model"]
        untrained = ", UNTRAINED" if model.get("untrained") else ""
        lines += [
            f"- model: {model['path']} (id {model['id'][:12]}, {model['dtype']}{untrained})",
            f"- recot {config['recot_version']}; sampling {json.dumps(config['sampling'])}; "
            f"keep ratio {config['keep_ratio']}; visual-token budget {config['max_visual_tokens']}; "
            f"{config['max_new_tokens']} new tokens; extractor {config['extractor']}",
            f"- system prompt {json.dumps(config.get('system_prompt'))}; "
            f"answer prefix {json.dumps(config.get('answer_prefix', ''))}",
        ]
    lines += [
        f"- this run: {outcome.answered_now} questions answered, {outcome.encoded_videos} videos encoded, "
        f"{outcome.cached_videos} from the cache, {outcome.seconds:.1f} s",
        "",
    ]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return (
        f"{value:.2f}"
        if isinstance(value, float) and abs(value) >= 1
        else f"{value:.4f}"
        if isinstance(value, float)
        else str(value)
    )


def items_by_video(items: Iterable[EvalItem]) -> dict[str, list[EvalItem]]:
    """Items grouped by video, videos in order of first appearance."""
    grouped: dict[str, list[EvalItem]] = {}
    for item in items:
        grouped.setdefault(item.video, []).append(item)
    return grouped
