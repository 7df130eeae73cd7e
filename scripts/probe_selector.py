"""Can the query-aware selector learn to keep a question's evidence? Train the selector alone and measure it.

The questions that name no time ("when does the red ring appear?", "how many times...") need the selector to
keep the named object's few tokens among 64 of thousands. This probe trains only the selector (``text_mlp`` and
the window attention; the encoder and LLM frozen, the LLM not run) on the rows of a ``recot train`` config that
carry ``evidence`` (``recot make-qa-data`` writes it for the object questions), with
:func:`recot.model.selector.evidence_loss`, and scores held-out rows under the model's token budget:

* ``recall``: the share of a row's evidence groups that keep at least one token, averaged over rows;
* ``all kept``: the share of rows whose every evidence group keeps a token;
* ``random``: ``recall`` of a selector that keeps random tokens (the same budget), for comparison.

Half the training samples are moved to a random start in the first ``data.time_shift`` seconds, as in
``recot train``. A step needs no LLM, so a few hundred take a minute once the tower's features are cached.

    python scripts/probe_selector.py configs/default/curriculum5_selector.yaml --test runs/default/data/test256 \\
        --test runs/default/data/test1024 --test runs/default/data/test3600 --steps 600 \\
        --out benchmarks/results/probe_selector.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from recot.data.atomic import atomic_write_text
from recot.model.encoder import EncodedVideo
from recot.model.selector import evidence_groups, evidence_loss, num_kept
from recot.train.config import load_train_config
from recot.train.data import IGNORE_INDEX, Sample, load_dataset, tokenize_conversation
from recot.train.features import VisionFeatureCache
from recot.train.forward import encode_grouped
from recot.train.stages import load_base_model
from recot.train.trainer import time_shift_for


class Probe:
    """The frozen model's encoded videos and each sample's question embeddings, ready for the selector."""

    def __init__(self, model, processor, cache: VisionFeatureCache) -> None:
        self.model, self.processor, self.cache = model, processor, cache
        self.videos: dict[Path, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def video(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor]:
        """The video's tokens (G, P, D) and group times (G,), encoded once."""
        if sample.media not in self.videos:
            grouped, times = self.cache.get(sample)
            self.videos[sample.media] = (encode_grouped(self.model, [grouped], checkpointing=False)[0], times)
        return self.videos[sample.media]

    def raw(self, sample: Sample, shift: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(G * P,) raw selector scores of the sample's video against its questions, and its (G,) evidence groups."""
        tokens, times = self.video(sample)
        times = times + shift
        with torch.no_grad():
            time_ids = self.processor.time_sequence_ids(times)
            sequence, layout = self.model.build_time_sequence(EncodedVideo(tokens, times), time_ids)
            ids_labels = tokenize_conversation(sample, self.processor)
            ids, labels = ids_labels.input_ids, ids_labels.labels
            text = (ids != self.model.config.image_token_index) & (labels == IGNORE_INDEX)
            text_embeds = self.model.language_model.get_input_embeddings()(ids[text])
        raw = self.model.selector.raw_scores(sequence, layout, text_embeds)
        positive = evidence_groups(times, [(a + shift, b + shift) for a, b in sample.evidence])
        return raw, positive


def kept_recall(probe: Probe, samples: list[Sample], budget: int, seed: int = 0) -> dict[str, float]:
    """Recall of the evidence groups under a ``budget`` of visual tokens, for the selector and for a random pick."""
    rng = np.random.default_rng(seed)
    recall, all_kept, random_recall = [], [], []
    config = probe.model.config
    for sample in samples:
        with torch.no_grad():
            raw, positive = probe.raw(sample)
        if not positive.any():  # evidence outside the sampled frames: nothing to keep
            continue
        groups = len(positive)
        k = num_kept(config, len(raw), 1.0, budget)
        per_group = len(raw) // groups
        kept = torch.zeros(groups, dtype=torch.bool)
        kept[raw.topk(k).indices // per_group] = True
        shuffled = torch.zeros(groups, dtype=torch.bool)
        shuffled[torch.from_numpy(rng.permutation(len(raw))[:k]) // per_group] = True
        recall.append(float(kept[positive].float().mean()))
        all_kept.append(float(kept[positive].all()))
        random_recall.append(float(shuffled[positive].float().mean()))
    return {"rows": len(recall), "recall": float(np.mean(recall)), "all_kept": float(np.mean(all_kept)),
            "random": float(np.mean(random_recall))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a recot train config: the model to start from, the training rows")
    parser.add_argument("--test", action="append", default=[], help="a make-qa-data folder of held-out rows")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--budget", type=int, default=64, help="visual tokens kept (the model's max_visual_tokens)")
    parser.add_argument("--fps", type=float, default=1.0, help="frames a second of the held-out videos")
    parser.add_argument("--out", type=Path, help="write the results here (JSON)")
    args = parser.parse_args(argv)
    try:
        run(args)
    except (OSError, ValueError) as exc:  # a missing or invalid config, checkpoint, data file or video: one line
        print(f"probe_selector.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> None:
    """Train the selector of ``args.config``'s model on its rows' evidence and score the held-out sets."""
    torch.manual_seed(0)
    cfg = load_train_config(args.config)
    model, processor = load_base_model(cfg)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(model.selector.parameters())
    for p in params:
        p.requires_grad_(True)
    train, _ = load_dataset(cfg.data.train, cfg.data.media_root, fps=cfg.data.fps, max_frames=cfg.data.max_frames)
    train = [s for s in train if s.evidence and s.kind == "video"]
    if not train:
        raise ValueError(f"no training row of {args.config} has evidence (recot make-qa-data writes it)")
    cache_dir = Path(cfg.data.feature_cache_dir or Path(cfg.output_dir) / "features")
    probe = Probe(model, processor, VisionFeatureCache(cache_dir, model, cfg.data.fps, cfg.data.max_frames))
    tests = {}
    for folder in args.test:
        rows = Path(folder) / "test.json"
        samples, _ = load_dataset([rows], folder, fps=args.fps, max_frames=None)
        samples = [s for s in samples if s.evidence]
        test_probe = Probe(model, processor, VisionFeatureCache(cache_dir, model, args.fps, None))
        tests[Path(folder).name] = (test_probe, samples)

    def evaluate() -> dict[str, dict[str, float]]:
        return {name: kept_recall(p, samples, args.budget) for name, (p, samples) in tests.items()}

    results = {"config": args.config, "steps": args.steps, "budget": args.budget, "train_rows": len(train),
               "before": evaluate()}  # fmt: skip
    print(json.dumps(results["before"]), flush=True)
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    losses = []
    for step in range(args.steps):
        picks = rng.integers(len(train), size=args.batch)
        scored = [probe.raw(train[i], time_shift_for(0, step * args.batch + j, cfg.data.time_shift, 0.5))
                  for j, i in enumerate(picks)]  # fmt: skip
        # as in recot train: evidence outside the sampled frames teaches nothing
        terms = [evidence_loss(raw, positive) for raw, positive in scored if positive.any()]
        if not terms:
            continue
        loss = torch.stack(terms).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0:
            print(f"step {step + 1}: loss {np.mean(losses[-50:]):.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    results["loss_first_50"] = float(np.mean(losses[:50]))
    results["loss_last_50"] = float(np.mean(losses[-50:]))
    results["seconds"] = time.perf_counter() - started
    results["after"] = evaluate()
    print(json.dumps(results["after"]), flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
