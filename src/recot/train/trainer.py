"""The ``recot train`` loop on ``accelerate``: one CPU, DDP (gloo/NCCL), FSDP or DeepSpeed, unchanged.

Determinism. The global batch of step ``s`` (which samples) is a pure function
of (seed, s): the samples are visited in a seeded permutation per epoch. Each
sample's selector keep ratio is drawn from ``U(keep_ratio_range)`` by a
generator seeded with (seed, position in the data stream). So resuming needs
only the step, and the data do not depend on the number of processes.

Equal results on N processes. Process r takes the r-th contiguous slice of the
global batch, in micro-batches of ``micro_batch_size`` with gradient
accumulation. Each micro-batch's loss is its summed answer-token
cross-entropy divided by the answer tokens of the whole global batch (counted
from the tokenised text, identical on every process), scaled so that
accelerate's division by the accumulation steps and the data-parallel gradient
average give exactly the gradient of the global-batch token mean.

Checkpoints. ``accelerator.save_state`` (model, optimizer, scheduler, RNG of
every process; sharded under FSDP/DeepSpeed) into a temporary folder, renamed to
``checkpoints/step-XXXXXXXX`` and then recorded in ``checkpoints/latest``
(written atomically), so a run killed at any moment (SIGKILL included)
resumes from a complete checkpoint with ``--resume`` and continues the exact
loss curve. At the end the model is saved with ``save_pretrained`` (LoRA
merged) in ``<output_dir>/model``: the released layout, ready for ``recot ask --model``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recot.data.atomic import atomic_write_text
from recot.model.processor import VideoXLProProcessor
from recot.train.config import TrainConfig
from recot.train.data import (
    DataError,
    Sample,
    TokenizedConversation,
    load_dataset,
    load_frames,
    shift_spans,
    shift_timeline,
    tokenize_conversation,
    write_bad_rows,
)
from recot.train.features import VisionFeatureCache
from recot.train.forward import ModelInput, TrainingForward
from recot.train.stages import StagedModel, load_base_model, merge_lora, parameter_groups, prepare_stage
from recot.training_utils import MetricsLog, warmup_cosine

METRIC_FIELDS = [
    "step", "loss", "answer_tokens", "llm_tokens", "keep_ratio", "grad_norm", "lr",
    "samples_per_s", "tokens_per_s", "seconds", "visual_similarity", "selector_loss",
]  # fmt: skip
MODEL_DIR = "model"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
BAD_ROWS_FILE = "bad_rows.txt"


def global_batch(num_samples: int, seed: int, step: int, batch_size: int) -> list[tuple[int, int]]:
    """(sample index, stream position) of the global batch of ``step``: a seeded permutation per epoch."""
    out = []
    perms: dict[int, np.ndarray] = {}
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(position, num_samples)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(num_samples)
        out.append((int(perms[epoch][i]), position))
    return out


def keep_ratio_for(seed: int, position: int, low: float, high: float) -> float:
    """The selector's keep ratio for the sample at ``position`` of the data stream: U(low, high), seeded."""
    return float(np.random.default_rng([seed, position, 1]).uniform(low, high))


def time_shift_for(seed: int, position: int, most: int, share: float) -> int:
    """Seconds the sample at ``position`` of the data stream is moved later (``data.time_shift``): with
    probability ``share`` a whole number in [0, most], else 0; seeded."""
    if not most:
        return 0
    rng = np.random.default_rng([seed, position, 2])
    return int(rng.integers(0, most + 1)) if rng.random() < share else 0


def shifted_tokens(
    sample: Sample, tokens: TokenizedConversation, seconds: int, processor: VideoXLProProcessor
) -> TokenizedConversation:
    """The tokens of ``sample`` with its clocks ``seconds`` later (:func:`shift_timeline`); as given for 0."""
    return tokens if not seconds else tokenize_conversation(shift_timeline(sample, seconds), processor)


def model_input(
    sample: Sample,
    tokens: TokenizedConversation,
    processor: VideoXLProProcessor,
    cfg: TrainConfig,
    keep_ratio: float,
    features: VisionFeatureCache | None = None,
    time_shift: int = 0,
) -> ModelInput:
    """Tokens, video (decoded frames, or cached vision features) and timestamp ids of one sample.

    Frames are sampled as at inference (``data.fps``, ``data.max_frames``); a ``time_vector`` or
    ``clock_grounding`` model also gets the clock times of the conversation's text (the model uses them at the
    prompt's clocks only, not the answers'). ``time_shift`` seconds are added to the frames' times (``tokens``
    then come from :func:`shifted_tokens` with the same shift).
    """
    times = processor.clock_times(tokens.input_ids) if processor.config.uses_clock_times else None
    evidence = shift_spans(sample.evidence, time_shift)
    if features is not None and sample.media is not None:
        grouped, group_times = features.get(sample)
        group_times = group_times + time_shift
        time_ids = processor.time_sequence_ids(group_times)
        return ModelInput(
            tokens.input_ids, tokens.labels, None, group_times, time_ids, keep_ratio, grouped, times, evidence
        )
    loaded = load_frames(sample, processor.config.image_size, cfg.data.fps, cfg.data.max_frames)
    if loaded is None:
        return ModelInput(tokens.input_ids, tokens.labels, None, None, None, keep_ratio, input_times=times)
    frames, stamps = loaded
    timestamps = torch.as_tensor(stamps, dtype=torch.float64) + time_shift
    time_ids = processor.time_sequence_ids(processor.group_timestamps(timestamps))
    return ModelInput(
        tokens.input_ids, tokens.labels, torch.from_numpy(frames), timestamps, time_ids, keep_ratio, input_times=times,
        evidence=evidence,
    )


@dataclass
class Dataset:
    """The usable samples with their tokenisation, and a digest identifying them (checked on resume)."""

    samples: list[Sample]
    tokens: list[TokenizedConversation]
    digest: str


def prepare_dataset(
    cfg: TrainConfig, processor: VideoXLProProcessor, accelerator, out: Path, progress: bool
) -> Dataset:
    """Validate the data on the main process (bad rows reported and written to ``bad_rows.txt``); the others
    read the list of usable rows it wrote. Raises :class:`DataError` (strict mode, or no usable row)."""
    index_file = out / "data_index.json"
    if accelerator.is_main_process:
        try:
            samples, bad = load_dataset(
                cfg.data.train, cfg.data.media_root, cfg.data.strict, cfg.data.check_media, cfg.data.fps,
                cfg.data.max_frames, progress,
            )  # fmt: skip
            error = None
        except DataError as exc:
            samples, bad, error = [], [], str(exc)
        write_bad_rows(out / BAD_ROWS_FILE, bad)
        atomic_write_text(index_file, json.dumps({"rows": [[s.file, s.line] for s in samples], "error": error}))
        print(
            f"data: {len(samples)} usable rows, {len(bad)} bad rows left out"
            + (f" (listed in {out / BAD_ROWS_FILE})" if bad else "")
        )
        for b in bad[:10]:
            print(f"  {b}")
        if len(bad) > 10:
            print(f"  ... {len(bad) - 10} more")
    accelerator.wait_for_everyone()
    index = json.loads(index_file.read_text())
    if index["error"]:
        raise DataError(index["error"])
    if not accelerator.is_main_process:
        wanted = {(f, line) for f, line in index["rows"]}
        samples, _ = load_dataset(cfg.data.train, cfg.data.media_root, False, False)
        samples = [s for s in samples if (s.file, s.line) in wanted]
    if not samples:
        raise DataError(f"no usable training rows in {', '.join(cfg.data.train) or '(data.train is empty)'}")
    tokens = [tokenize_conversation(s, processor) for s in samples]
    digest = hashlib.sha256(json.dumps(index["rows"]).encode())
    for t in tokens:
        digest.update(t.input_ids.numpy().tobytes() + t.labels.numpy().tobytes())
    return Dataset(samples, tokens, digest.hexdigest())


def distributed_state():
    """accelerate's process state. Without a GPU it is told to use the CPU, so that processes started by
    ``torchrun`` join one gloo group (accelerate otherwise sees each CPU process as a run of its own)."""
    from accelerate.state import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import GradientAccumulationPlugin

    world = distributed_state().num_processes
    per_rank, rem = divmod(cfg.optim.batch_size, world)
    if rem or per_rank % cfg.optim.micro_batch_size:
        raise ValueError(
            f"optim.batch_size {cfg.optim.batch_size} must be a multiple of {world} processes x "
            f"optim.micro_batch_size {cfg.optim.micro_batch_size}"
        )
    steps = per_rank // cfg.optim.micro_batch_size
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision="bf16" if precision == "bf16" else "no",
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=steps, sync_with_dataloader=False),
        # Text-only samples leave the selector unused; the post-layernorm is never used.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def latest_checkpoint(out: Path) -> Path | None:
    """The last complete checkpoint folder of a run, or None."""
    pointer = Path(out) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    return folder if (folder / "meta.json").is_file() else None


#: Settings that decide what each step draws (its samples, keep ratios, time shifts): a resume must keep them.
DRAW_SETTINGS = ("seed", "keep_ratio_range", "data.time_shift", "data.time_shift_share", "optim.batch_size")


def _changed_draw_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"name (saved -> current)"`` for each of :data:`DRAW_SETTINGS` that differs between two dumped configs."""
    changed = []
    for name in DRAW_SETTINGS:
        before, now = saved, current
        for part in name.split("."):
            before, now = before.get(part), now.get(part)
        if before != now:
            changed.append(f"{name} ({before} -> {now})")
    return changed


def _save_checkpoint(accelerator, out: Path, step: int, cfg: TrainConfig, data_digest: str) -> None:
    """All processes write their part into a temporary folder; the main process renames it into place."""
    root = out / CHECKPOINTS
    name = f"step-{step:08d}"
    tmp = root / f".{name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    # The tied lm_head is stored once (as save_pretrained does); accelerate warns about that on every save.
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        meta = {"step": step, "data_digest": data_digest, "config": cfg.model_dump(mode="json")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        final = root / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(root / LATEST, name)
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[: -cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _save_model(
    accelerator, wrapper, staged: StagedModel, processor: VideoXLProProcessor, cfg: TrainConfig, out: Path, steps: int
) -> None:
    """``save_pretrained`` of the model trained for ``steps`` (LoRA merged) into ``<out>/model`` on the main process;
    its config's ``extra.trained`` says the stage, the steps and, for a run stopped early, the steps of its schedule."""
    from accelerate.utils import DistributedType

    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    state = accelerator.get_state_dict(wrapper) if sharded else None  # every process takes part in the gather
    if accelerator.is_main_process:
        if sharded:
            # A fresh copy on the CPU receives the gathered full weights.
            base, _ = load_base_model(cfg)
            staged = prepare_stage(base, cfg)
            TrainingForward(staged.module, staged.model, False, None).load_state_dict(state)
        model = merge_lora(staged)
        trained = {"stage": cfg.stage, "steps": steps} | ({"of": cfg.optim.steps} if steps < cfg.optim.steps else {})
        model.config.extra = {**model.config.extra, "trained": trained}
        model.save_pretrained(out / MODEL_DIR, tokenizer=processor.tokenizer)
    accelerator.wait_for_everyone()


def train(
    cfg: TrainConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> list[dict[str, float]]:
    """Run a training stage; returns this run's metric rows (global values per step).

    Args:
        cfg: the configuration.
        resume: continue from the last complete checkpoint of ``output_dir`` when there is one.
        progress: progress bars on the main process.
        stop_after: stop once this step is done, as an interruption would (the schedule stays that of
            ``optim.steps``; ``resume`` goes on), after its checkpoint and ``<out>/model`` as of that step.

    Launched by ``accelerate launch`` or ``torchrun``, the run is data-parallel
    (or FSDP/DeepSpeed, from the accelerate config) over the processes.
    Raises :class:`DataError` for unusable data, ``ValueError`` for inconsistent settings.
    """
    from tqdm.auto import tqdm

    accelerator = _accelerator(cfg)
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    model, processor = load_base_model(cfg)
    data = prepare_dataset(cfg, processor, accelerator, out, progress)
    staged = prepare_stage(model, cfg)
    groups = parameter_groups(staged, cfg)
    optimizer = torch.optim.AdamW(groups, betas=cfg.optim.betas)
    o = cfg.optim
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(o.warmup_steps, o.steps, o.min_lr_ratio))
    selector_weight = o.selector_loss_weight
    wrapper = TrainingForward(
        staged.module, staged.model, cfg.gradient_checkpointing, cfg.max_visual_tokens, cfg.encode_chunk_groups,
        selector_loss=selector_weight > 0,
    )
    wrapper.train()
    if accelerator.state.deepspeed_plugin is not None:  # no data loader is prepared, so DeepSpeed is told directly
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = o.micro_batch_size
    wrapper, optimizer = accelerator.prepare(wrapper, optimizer)
    params = [p for p in wrapper.parameters() if p.requires_grad]  # as wrapped (FSDP replaces them)
    accelerator.register_for_checkpointing(scheduler)

    start = 0
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        meta = json.loads((checkpoint / "meta.json").read_text())
        if meta["data_digest"] != data.digest:
            raise ValueError(
                f"the training data changed since checkpoint {checkpoint}; resuming would not continue the same run"
            )
        changed = _changed_draw_settings(meta["config"], cfg.model_dump(mode="json"))
        if changed:
            raise ValueError(f"{', '.join(changed)} changed since checkpoint {checkpoint}; resuming would not continue the same run")
        accelerator.load_state(str(checkpoint))
        start = int(meta["step"])
        if accelerator.is_main_process:
            print(f"resuming from {checkpoint} (step {start})")

    world, rank = accelerator.num_processes, accelerator.process_index
    per_rank = o.batch_size // world
    accumulation = per_rank // o.micro_batch_size
    log = MetricsLog(out, METRIC_FIELDS, start, enabled=accelerator.is_main_process, tag="train")
    end = o.steps if stop_after is None else min(stop_after, o.steps)
    low, high = cfg.keep_ratio_range
    features = None
    if cfg.data.feature_cache:
        features = VisionFeatureCache(
            cfg.data.feature_cache_dir or out / "features", staged.model, cfg.data.fps, cfg.data.max_frames
        )
        if cfg.data.feature_workers and accelerator.is_main_process:
            features.fill(data.samples, cfg.data.feature_workers, progress)
        accelerator.wait_for_everyone()
    rows: list[dict[str, float]] = []
    bar = tqdm(
        total=o.steps,
        initial=start,
        desc=f"train ({cfg.stage})",
        disable=not (progress and accelerator.is_main_process),
    )
    for step in range(start, end):
        started = time.perf_counter()
        batch = global_batch(len(data.samples), cfg.seed, step, o.batch_size)
        shifts = {
            pos: time_shift_for(cfg.seed, pos, cfg.data.time_shift, cfg.data.time_shift_share)
            if data.samples[i].kind == "video" else 0
            for i, pos in batch
        }  # fmt: skip
        tokens = {pos: shifted_tokens(data.samples[i], data.tokens[i], shifts[pos], processor) for i, pos in batch}
        answer_tokens = sum(tokens[pos].num_label_tokens for _, pos in batch)
        # the selector's loss is a mean over the global batch's samples with evidence (those without a group of
        # it among their frames, rare, count too)
        evidence_samples = sum(1 for i, _ in batch if data.samples[i].evidence and data.samples[i].kind == "video")
        mine = batch[rank * per_rank : (rank + 1) * per_rank]
        # loss sum, LLM tokens, keep ratios, visual similarity sum, samples with a video, selector loss sum
        totals = torch.zeros(6, dtype=torch.float64, device=accelerator.device)
        grad_norm = torch.zeros(())
        for m in range(accumulation):
            inputs = [
                model_input(
                    data.samples[i], tokens[pos], processor, cfg, keep_ratio_for(cfg.seed, pos, low, high), features,
                    shifts[pos],
                )  # fmt: skip
                for i, pos in mine[m * o.micro_batch_size : (m + 1) * o.micro_batch_size]
            ]
            with accelerator.accumulate(wrapper):
                result = wrapper(inputs)
                # accelerate divides by the accumulation steps; DDP averages over processes.
                loss = result.loss_sum * (accumulation * world / answer_tokens)
                if result.selector_loss_sum is not None:
                    loss = loss + result.selector_loss_sum * (selector_weight * accumulation * world / evidence_samples)
                if not loss.requires_grad:
                    # Nothing trained was used (e.g. text-only rows in the align stage): a zero gradient,
                    # so that every process still takes part in the gradient reduction.
                    loss = loss + sum(p.sum() for p in params) * 0.0
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    norm = accelerator.clip_grad_norm_(params, o.grad_clip if o.grad_clip > 0 else float("inf"))
                    grad_norm = torch.tensor(float("nan")) if norm is None else norm  # DeepSpeed clips by itself
                optimizer.step()
                optimizer.zero_grad()
            totals[0] += result.loss_sum.detach().double()
            totals[1] += result.llm_tokens
            totals[2] += sum(x.keep_ratio for x in inputs)
            totals[3] += result.similarity_sum
            totals[4] += result.videos
            if result.selector_loss_sum is not None:
                totals[5] += result.selector_loss_sum.detach().double()
        if not accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation lost step with the micro-batches")
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        totals = accelerator.reduce(totals, reduction="sum")
        seconds = time.perf_counter() - started
        row = {
            "step": step + 1,
            "loss": float(totals[0]) / answer_tokens,
            "answer_tokens": answer_tokens,
            "llm_tokens": float(totals[1]),
            "keep_ratio": float(totals[2]) / o.batch_size,
            "grad_norm": float(grad_norm),
            "lr": lr,
            "samples_per_s": o.batch_size / seconds,
            "tokens_per_s": float(totals[1]) / seconds,
            "seconds": seconds,
            "visual_similarity": float(totals[3]) / float(totals[4]) if totals[4] else float("nan"),
            "selector_loss": float(totals[5]) / evidence_samples if selector_weight and evidence_samples else float("nan"),
        }
        rows.append(row)
        if (step + 1) % cfg.log_every == 0 or step + 1 == end:
            log.write(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end:
            _save_checkpoint(accelerator, out, step + 1, cfg, data.digest)
    bar.close()
    log.close()
    if start < end or (end == o.steps and not (out / MODEL_DIR).exists()):
        _save_model(accelerator, wrapper, staged, processor, cfg, out, end)
    return rows
