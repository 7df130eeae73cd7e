"""Can the default model's LLM learn to read the video's timeline? A text-only probe of time lookup.

Questions like "what is on screen at 01:34?" need the LLM to find the frame
group whose timestamp text covers 01:34 and read that group's tokens. This
script isolates that skill from vision: each sample is the model's own LLM
input for a video (the processor's chat prompt, a timestamp text per group,
``tokens_per_group`` slots after it), except that each group's slots hold one
content token id (drawn from ``--classes`` ids above the tokenizer's special
tokens) instead of visual embeddings. The question is the ``identify``
template of ``recot make-qa-data``; the answer is the content id of the group
that covers the asked time (``--query-time any``: any second of the group;
``start``: the group's own timestamp, an exact text match). ``--questions N``
asks N such questions of each pseudo-video as one multi-turn conversation, as
the recipe's identification rows do: N answers to learn from per sample
instead of one, at little more length. ``--clock-tokens`` builds the preset's
byte tokenizer with clock merges (``37:12`` as ``37`` ``:12``, in the timeline
and the question alike; :func:`recot.model.tokenizer.build_byte_tokenizer`).

The LLM (the config's, from scratch, or the one in ``--model``) is trained on
fresh samples with AdamW and scored on a fixed held-out set of samples every
``--eval-every`` steps (and before the first):

* ``accuracy``: the answer is the asked group's content;
* ``in video``: the answer is the content of some group of the sample (a model
  that has learned "name something in the video" but not the lookup scores
  high here and near ``chance`` on accuracy);
* ``chance``: the accuracy of picking a group of the sample at random.

``--curriculum N`` grows the number of groups from ``--groups``' first value
to its second over the first N steps (the held-out set always uses the full
range). Deterministic for ``--seed`` (and ``--workers``). Each evaluation is
printed as it comes and ``--json`` is rewritten after it, so a long run can be
stopped at any point.

On a GPU (``--device cuda``) the tiny LLM trains faster than Python writes the
samples: ``--workers N`` builds the batches in N processes (worker ``k`` writes
the batches of steps ``k+1, k+1+N, ...`` from its own seeded generator, so a run
is deterministic for a given N; 0, the default, builds them in this process as
before). ``--time-limit S`` ends training after the step during which S
seconds have passed (evaluated and saved as a last step would be), and
``--save DIR`` writes the trained LLM and its tokenizer with
``save_pretrained``.

``--time-vector`` probes the LLM input of a ``time_vector`` model
(:mod:`recot.model.time_vectors`): one fixed absolute-time vector (sines and
cosines of the time in seconds at periods from 8 s to 2 h) is added to the
embeddings of each group's timestamp text and slots (at the group's middle
second) and to those of the question's clock (at the asked second), so a
question's time and the group covering it look alike to attention.

    python scripts/probe_time_lookup.py --preset lite48 --steps 3000 --json runs/lookup.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from recot.config import VideoXLProConfig
from recot.data.atomic import atomic_write_text
from recot.data.synthetic_qa import TEMPLATES
from recot.engine.default_model import UNTRAINED_PRESETS
from recot.model.processor import VideoXLProProcessor, clock_time
from recot.model.time_vectors import add_time_vectors, window_times
from recot.model.tokenizer import build_byte_tokenizer
from recot.model.videoxl_pro import layout_from_ids


@dataclass
class Sample:
    """One pseudo-video: the LLM input ids (prompt and answers), each answer's position and every group's content.

    ``times`` gives each id's time in seconds for ``--time-vector``: a group's middle second on its timestamp text
    and slots, the asked second on a question's clock, NaN elsewhere.
    """

    ids: list[int]
    answer_positions: list[int]
    contents: list[int]
    times: list[float]


class TimelineTask:
    """Builds :class:`Sample` s shaped exactly like the model's LLM input for a video of ``groups`` frame groups."""

    def __init__(self, processor: VideoXLProProcessor, classes: int, query_time: str) -> None:
        config = processor.config
        first = len(processor.tokenizer)  # ids the tokenizer writes; the rest of the vocabulary is free
        if first + classes > config.vocab_size:
            raise ValueError(f"--classes {classes}: the vocabulary has only {config.vocab_size - first} free ids")
        self.processor = processor
        self.content_ids = list(range(config.vocab_size - classes, config.vocab_size))
        self.query_time = query_time
        self.group_seconds = config.frames_per_group  # frames are 1 s apart, as in the synthetic videos at 1 fps
        self.slots = config.tokens_per_group
        self.placeholder = config.placeholder_token_id
        self.image_id = config.image_token_index

    def sample(self, rng: np.random.Generator, groups: int, questions: int = 1) -> Sample:
        """A pseudo-video of ``groups`` groups and ``questions`` turns; each answer is one content id.

        The first turn is the inference prompt (``processor.tokenize_prompt``);
        each later one continues the ChatML conversation as the training rows
        do (``<|im_end|>\\n<|im_start|>user\\n...<|im_start|>assistant\\n``).
        """
        starts = [g * self.group_seconds for g in range(groups)]
        contents = [int(c) for c in rng.choice(self.content_ids, groups)]
        group_times = torch.tensor(starts, dtype=torch.float64)
        timeline = self.processor.time_sequence_ids(group_times).tolist()
        slot = iter(c for c in contents for _ in range(self.slots))
        layout = layout_from_ids(torch.tensor(timeline), self.placeholder)  # as the model reads the timeline
        timeline_times = window_times(layout, group_times, self.processor.config.frames_per_group).tolist()
        timeline = [next(slot) if i == self.placeholder else i for i in timeline]
        ids: list[int] = []
        times: list[float] = []
        positions: list[int] = []
        for turn in range(questions):
            asked = int(rng.integers(groups))
            seconds = starts[asked] + (int(rng.integers(self.group_seconds)) if self.query_time == "any" else 0)
            template = TEMPLATES["identify"][int(rng.integers(len(TEMPLATES["identify"])))]
            question = template.format(time=clock_time(seconds))
            if turn == 0:
                prompt = self.processor.tokenize_prompt(question).tolist()
                at = prompt.index(self.image_id)
                prompt_times = self.processor.clock_times(prompt).tolist()  # as the engine marks a prompt
                ids += prompt[:at] + timeline + prompt[at + 1 :]
                times += prompt_times[:at] + timeline_times + prompt_times[at + 1 :]
            else:
                follow_up = f"<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
                turn_ids = self.processor.tokenizer(follow_up, add_special_tokens=False).input_ids
                ids += turn_ids
                times += self.processor.clock_times(turn_ids).tolist()
            positions.append(len(ids))
            ids.append(contents[asked])
            times.append(math.nan)
        return Sample(ids, positions, contents, times)


def collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, labels, times), each (B, L); only the answer tokens have labels; times NaN-padded."""
    length = max(len(s.ids) for s in samples)
    ids = torch.zeros(len(samples), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    times = torch.full((len(samples), length), math.nan, dtype=torch.float64)
    for i, s in enumerate(samples):
        ids[i, : len(s.ids)] = torch.tensor(s.ids)
        mask[i, : len(s.ids)] = 1
        times[i, : len(s.ids)] = torch.tensor(s.times, dtype=torch.float64)
        for at in s.answer_positions:
            labels[i, at] = s.ids[at]
    return ids, mask, labels, times


def forward(llm: torch.nn.Module, batch: tuple[torch.Tensor, ...], time_vector: bool, with_labels: bool = True):
    """The LLM's output for a collated batch, the time vectors added to the input embeddings if ``time_vector``."""
    device = next(llm.parameters()).device
    ids, mask, labels, times = (t.to(device) for t in batch)
    embeds = llm.get_input_embeddings()(ids)
    if time_vector:
        embeds = add_time_vectors(embeds, times)
    return llm(inputs_embeds=embeds, attention_mask=mask, labels=labels if with_labels else None)


@torch.no_grad()
def evaluate(llm: torch.nn.Module, samples: list[Sample], batch_size: int, time_vector: bool = False) -> dict[str, float]:
    """accuracy, in-video and chance (see the module docstring) over every answer of ``samples``."""
    llm.eval()
    right = in_video = answers = 0
    chance = 0.0
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        guesses = forward(llm, collate(chunk), time_vector, with_labels=False).logits.argmax(-1).cpu()
        for row, s in enumerate(chunk):
            for at in s.answer_positions:
                guess = int(guesses[row, at - 1])
                truth = s.ids[at]
                right += guess == truth
                in_video += guess in s.contents
                chance += s.contents.count(truth) / len(s.contents)
                answers += 1
    llm.train()
    return {"accuracy": right / answers, "in_video": in_video / answers, "chance": chance / answers}


def groups_at(step: int, low: int, high: int, curriculum: int) -> int:
    """The most groups a training sample may have at ``step`` (1-based)."""
    if curriculum <= 0:
        return high
    return min(high, low + math.floor((high - low) * step / curriculum))


class TrainingBatches(torch.utils.data.IterableDataset):
    """The samples of every training step; in a ``DataLoader`` with N workers, worker k writes steps k+1, k+1+N, ...

    Each worker draws from its own generator (``[seed, 0, k]``), so the batches
    are the same for the same seed and worker count; in this process (no
    workers) the generator is ``[seed, 0]``, as before workers existed. The
    samples travel as plain Python objects (pickled through a pipe, not shared
    memory, which some containers keep small) and are collated by the trainer.
    """

    def __init__(self, task: TimelineTask, args: argparse.Namespace) -> None:
        self.task, self.args = task, args

    def __iter__(self) -> Iterator[list[Sample]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        seed = [self.args.seed, 0] if info is None else [self.args.seed, 0, worker]
        rng = np.random.default_rng(seed)
        low, high = self.args.groups
        for step in range(worker + 1, self.args.steps + 1, workers):
            most = groups_at(step, low, high, self.args.curriculum)
            yield [self.task.sample(rng, int(rng.integers(low, most + 1)), self.args.questions)
                   for _ in range(self.args.batch_size)]  # fmt: skip


def pick_device(name: str) -> torch.device:
    """``--device``: ``auto`` is CUDA, then MPS, then the CPU; a named device that is not there is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise ValueError(f"--device {name}: no such device on this machine")
    return torch.device(name)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line's settings (usage errors exit 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", default="lite48", choices=UNTRAINED_PRESETS,
                        help="a small preset (byte tokenizer) whose LLM is trained from scratch")  # fmt: skip
    source.add_argument("--model", type=Path, help="a model directory whose LLM is trained further")
    parser.add_argument("--clock-tokens", action="store_true",
                        help="the preset's byte tokenizer with clock merges (37:12 -> 37 :12); not with --model")  # fmt: skip
    parser.add_argument("--time-vector", action="store_true",
                        help="add an absolute-time vector to the timeline's and the question's time tokens")  # fmt: skip
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--groups", type=int, nargs=2, default=(8, 24), metavar=("MIN", "MAX"))
    parser.add_argument("--curriculum", type=int, default=0, metavar="STEPS")
    parser.add_argument("--query-time", choices=("any", "start"), default="any")
    parser.add_argument("--questions", type=int, default=1, help="questions (turns) per pseudo-video")
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-samples", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the settings and the table here (atomically)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="processes that build the training batches")
    parser.add_argument("--time-limit", type=float, metavar="SECONDS", help="stop training after this long")
    parser.add_argument("--save", type=Path, metavar="DIR", help="write the trained LLM and tokenizer here")
    args = parser.parse_args(argv)
    for flag, value, least in (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1),
                               ("--eval-every", args.eval_every, 1), ("--eval-samples", args.eval_samples, 1),
                               ("--classes", args.classes, 2), ("--questions", args.questions, 1),
                               ("--workers", args.workers, 0)):  # fmt: skip
        if value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")
    if args.clock_tokens and args.model is not None:
        parser.error("--clock-tokens builds a preset's tokenizer; a --model directory brings its own")
    if not 1 <= args.groups[0] <= args.groups[1]:
        parser.error(f"--groups needs 1 <= MIN <= MAX, got {args.groups[0]} {args.groups[1]}")
    if args.time_limit is not None and args.time_limit <= 0:
        parser.error(f"--time-limit must be positive, got {args.time_limit}")
    return args


def load_llm(args: argparse.Namespace) -> tuple[torch.nn.Module, VideoXLProProcessor]:
    """The LLM to train and the processor that formats its input."""
    if args.model is not None:
        from recot.model.videoxl_pro import VideoXLPro

        model = VideoXLPro.from_pretrained(args.model, dtype=torch.float32)
        return model.language_model, VideoXLProProcessor.from_pretrained(args.model)
    from transformers import Qwen2ForCausalLM

    config = VideoXLProConfig.from_preset(args.preset)
    torch.manual_seed(args.seed)
    return Qwen2ForCausalLM(config.text_config()), VideoXLProProcessor(build_byte_tokenizer(args.clock_tokens), config)


def run(args: argparse.Namespace) -> list[dict[str, float | None]]:
    """Train the LLM on fresh pseudo-videos; one row per evaluation (step 0 first)."""
    device = pick_device(args.device)
    if args.workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers fork after the tokenizer was used
    llm, processor = load_llm(args)
    llm.to(device)
    task = TimelineTask(processor, args.classes, args.query_time)
    low, high = args.groups
    held_out_rng = np.random.default_rng([args.seed, 1])
    held_out = [task.sample(held_out_rng, int(held_out_rng.integers(low, high + 1)), args.questions)
                for _ in range(args.eval_samples)]  # fmt: skip
    torch.manual_seed(args.seed)
    optim = torch.optim.AdamW(llm.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / max(1, args.warmup)))
    rows = [{"step": 0, "max_groups": groups_at(0, low, high, args.curriculum), "loss": None,
             **evaluate(llm, held_out, args.batch_size, args.time_vector)}]  # fmt: skip
    report(args, rows)
    batches = torch.utils.data.DataLoader(TrainingBatches(task, args), batch_size=None, num_workers=args.workers,
                                          prefetch_factor=4 if args.workers else None)  # fmt: skip
    losses: list[torch.Tensor] = []
    started = time.monotonic()
    llm.train()
    progress = tqdm(zip(range(1, args.steps + 1), batches, strict=True), total=args.steps, desc="time lookup", unit="step")
    for step, batch in progress:
        loss = forward(llm, collate(batch), args.time_vector).loss
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        optim.step()
        schedule.step()
        losses.append(loss.detach())
        out_of_time = args.time_limit is not None and time.monotonic() - started >= args.time_limit
        if step % args.eval_every == 0 or step == args.steps or out_of_time:
            scores = evaluate(llm, held_out, args.batch_size, args.time_vector)
            mean_loss = float(torch.stack(losses).double().mean())
            rows.append({"step": step, "max_groups": groups_at(step, low, high, args.curriculum), "loss": mean_loss,
                         **scores})  # fmt: skip
            losses = []
            report(args, rows, time.monotonic() - started)
        if out_of_time:
            tqdm.write(f"--time-limit {args.time_limit:g} s reached after step {step}")
            break
    progress.close()
    if args.save is not None:
        llm.save_pretrained(args.save)
        processor.tokenizer.save_pretrained(args.save)
    return rows


def report(args: argparse.Namespace, rows: list[dict[str, float | None]], seconds: float = 0.0) -> None:
    """Print the newest row above the progress bar; rewrite the JSON (an interrupted run keeps its rows).

    ``seconds`` (the training time so far) goes into the JSON beside the rows, not into them, so that two runs of
    the same settings have equal rows.
    """
    tqdm.write(table(rows[-1:]).splitlines()[-1])
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
        record = {"settings": settings, "training_seconds": round(seconds, 1), "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")


def table(rows: list[dict[str, float | None]]) -> str:
    """The rows as a markdown table."""
    lines = ["| step | groups up to | train loss | accuracy | in video | chance |", "|---|---|---|---|---|---|"]
    for r in rows:
        loss = "-" if r["loss"] is None else f"{r['loss']:.3f}"
        lines.append(f"| {r['step']} | {r['max_groups']} | {loss} | {r['accuracy']:.3f} "
                     f"| {r['in_video']:.3f} | {r['chance']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line: train, print the table, write the JSON; 1 on a bad model or setting."""
    args = parse_args(argv)
    try:
        rows = run(args)
    except (OSError, ValueError) as exc:
        print(f"probe_time_lookup.py: error: {exc}", file=sys.stderr)
        return 1
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
