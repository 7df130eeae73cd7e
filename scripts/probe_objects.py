"""Where along the visual path does a small object's colour and shape get lost? Linear probes per stage.

On generated training videos (``recot make-qa-data``, whose ``<split>.videos.jsonl``
manifest gives every object's time, colour and shape), each frame group is labelled
with the object on screen for at least 2 of its 4 frames, if any. A linear
classifier (standardised features, Adam, 400 full-batch steps) is fitted on the
first 70% of the groups, in video order, and scored on the rest, reading:

* ``presence`` (an object or none) from every group,
* ``colour`` and ``shape`` from the groups with an object,

out of the stages of the model that a ``recot train`` config builds:

* ``tower``: the frozen vision tower's map (C, g, g), averaged over the group's 4 frames;
* ``compressor``: the ReCoT compressor's output map (C, g, g);
* ``linear1``: the projector's first linear layer applied to the compressor's output, pooled: a control. It
  is a full-rank linear map of the ``compressor`` stage (D >= C), so everything a linear classifier reads there
  is still there, and only the probe's reach differs (standardised mixed features, a few hundred examples);
* ``tokens``: what the LLM sees, the projected and pooled tokens (P, D);
* ``grounding``: their mean (D,), what ``clock_grounding`` adds to a question's clock that names the group's time;
* ``grounding, trained``: the same mean, with the projector not the config's but a fresh one of its shape
  trained with the classifier (Adam, 400 full-batch steps): what the grounding vector *can* carry of the
  compressor's output, against what the model's own projector lets through (``grounding``).

The two maps are average-pooled with the model's ``pool_stride``, as the tokens
are, so the stages differ only by what they compute. ``chance`` is the share of
the commonest label among the scored groups. Videos longer than the config's
``max_frames`` at its ``fps`` are skipped (there a group's frames are not 1/fps
apart, so its labels would be wrong). Needs the config's cached tower
features (``data.feature_cache``) or computes them.

    python scripts/probe_objects.py configs/default/sft_dense.yaml --videos 80
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recot.data.atomic import atomic_write_text
from recot.data.synthetic_qa import iter_specs
from recot.train.config import load_train_config
from recot.train.data import load_dataset
from recot.train.features import VisionFeatureCache
from recot.train.stages import load_base_model


def fit_probe(features: np.ndarray, labels: list[str], train_share: float = 0.7, seed: int = 0) -> tuple[float, float]:
    """(held-out accuracy of a linear classifier, share of the commonest held-out label)."""
    x = torch.as_tensor(features, dtype=torch.float32)
    cut = int(len(labels) * train_share)
    mean, std = x[:cut].mean(0), x[:cut].std(0) + 1e-6
    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[1], len(set(labels)))
    return _fit_and_score(list(probe.parameters()), probe, (x - mean) / std, labels, cut, lr=1e-2, weight_decay=1e-3)


def fit_grounding_probe(
    maps: torch.Tensor, labels: list[str], model: torch.nn.Module, train_share: float = 0.7, seed: int = 0
) -> tuple[float, float]:
    """Like :func:`fit_probe`, on compressor maps (N, C, g, g) through a fresh projector of the model's shape,
    its pooling (``model.pool``) and the mean over the group's tokens, trained together with the classifier."""
    torch.manual_seed(seed)
    hidden = model.config.hidden_size
    projector = torch.nn.Sequential(torch.nn.Linear(maps.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden))
    head = torch.nn.Linear(hidden, len(set(labels)))

    def logits(x: torch.Tensor) -> torch.Tensor:
        return head(model.pool(projector(x.flatten(2).transpose(1, 2))).mean(1))

    parameters = [*projector.parameters(), *head.parameters()]
    return _fit_and_score(parameters, logits, maps, labels, int(len(labels) * train_share), lr=3e-3)


def _fit_and_score(
    parameters: list[torch.nn.Parameter],
    classifier: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    labels: list[str],
    cut: int,
    lr: float,
    weight_decay: float = 0.0,
) -> tuple[float, float]:
    """Fit ``classifier`` (logits of ``x``; its ``parameters``) on the first ``cut`` examples (Adam, 400
    full-batch steps); (accuracy on the rest, share of the commonest label there)."""
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(label) for label in labels])
    optim = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    for _ in range(400):
        optim.zero_grad()
        F.cross_entropy(classifier(x[:cut]), y[:cut]).backward()
        optim.step()
    with torch.no_grad():
        accuracy = (classifier(x[cut:]).argmax(1) == y[cut:]).float().mean().item()
    chance = max((y[cut:] == c).float().mean().item() for c in range(len(classes)))
    return accuracy, chance


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="a recot train config (the model it builds is probed)")
    parser.add_argument("--videos", type=int, default=80, help="training videos to probe (the first N)")
    parser.add_argument("--json", type=Path, help="also write the table here as JSON")
    args = parser.parse_args()
    try:
        probe(args)
    except (OSError, ValueError) as exc:  # a missing or invalid config, checkpoint, data file or video: one line
        print(f"probe_objects.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


def probe(args: argparse.Namespace) -> None:
    """Fit and print the probes of ``args.config`` (see the module docstring)."""
    cfg = load_train_config(args.config)
    model, _ = load_base_model(cfg)
    model = model.eval().requires_grad_(False)
    train_file = Path(cfg.data.train[0])
    manifests = sorted(train_file.parent.glob("*.videos.jsonl"))
    if not manifests:
        raise ValueError(f"{train_file.parent}: no <split>.videos.jsonl manifest (written by recot make-qa-data)")
    specs = {spec.id: spec for spec in iter_specs(manifests[0])}
    # A group's frames are 1/fps apart only while max_frames does not thin the sampling: longer videos are skipped.
    fps, max_frames = cfg.data.fps, cfg.data.max_frames
    first_rows, seen, skipped = [], set(), 0
    for row in json.loads(train_file.read_text()):
        if row["video"] in seen or len(first_rows) >= args.videos:
            continue
        seen.add(row["video"])
        spec = specs[row["id"].rsplit("-", 1)[0]]
        if max_frames is not None and spec.duration * fps > max_frames:
            skipped += 1
            continue
        first_rows.append(row)
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.json"
        rows_file.write_text(json.dumps(first_rows))
        samples, _ = load_dataset([str(rows_file)], cfg.data.media_root, False, False)
    cache = VisionFeatureCache(cfg.data.feature_cache_dir, model, cfg.data.fps, cfg.data.max_frames)
    stride = model.config.pool_stride
    stages: dict[str, list[np.ndarray]] = {"tower": [], "compressor": [], "linear1": [], "tokens": [], "grounding": []}
    maps: list[torch.Tensor] = []  # the compressor's output maps (C, g, g), for the trained grounding probe
    colours: list[str | None] = []
    shapes: list[str | None] = []
    with torch.no_grad():
        for sample in samples:
            spec = specs[sample.id.rsplit("-", 1)[0]]
            grouped, group_times = cache.get(sample)  # (G, C, 4, g, g), (G,)
            compressed = model.compressor(grouped)[:, :, 0]  # (G, C, g, g)
            maps.extend(compressed)
            tokens = model.pool(model.projector(compressed.flatten(2).transpose(1, 2)))  # (G, P, D)
            grid = model.config.grid_size
            linear = model.projector[0](compressed.flatten(2).transpose(1, 2))  # (G, g*g, D)
            linear = F.avg_pool2d(linear.transpose(1, 2).unflatten(2, (grid, grid)), stride).flatten(1)
            tower = F.avg_pool2d(grouped.mean(2), stride).flatten(1)
            compressed = F.avg_pool2d(compressed, stride).flatten(1)
            for k, start in enumerate(group_times.tolist()):
                seconds = [start + i / fps for i in range(4)]
                on = [e for e in spec.events if sum(e.start <= s < e.start + e.seconds for s in seconds) >= 2]
                colours.append(on[0].color if on else None)
                shapes.append(on[0].shape if on else None)
                stages["tower"].append(tower[k].numpy())
                stages["compressor"].append(compressed[k].numpy())
                stages["tokens"].append(tokens[k].flatten().numpy())
                stages["grounding"].append(tokens[k].mean(0).numpy())
                stages["linear1"].append(linear[k].numpy())
    present = np.array([c is not None for c in colours])
    with_object = np.flatnonzero(present)
    print(f"{args.config}: {len(samples)} videos ({skipped} longer than max_frames skipped), {len(present)} groups, "
          f"{len(with_object)} with an object")  # fmt: skip
    print("| stage | features | presence (chance) | colour (chance) | shape (chance) |")
    print("|---|---:|---|---|---|")
    table = []
    for name, rows in stages.items():
        x = np.stack(rows)
        result = {
            "stage": name,
            "features": x.shape[1],
            "presence": fit_probe(x, ["object" if p else "none" for p in present]),
            "colour": fit_probe(x[with_object], [colours[i] for i in with_object]),
            "shape": fit_probe(x[with_object], [shapes[i] for i in with_object]),
        }
        table.append(result)
        _print_row(result)
    grid = torch.stack(maps)
    result = {
        "stage": "grounding, trained",
        "features": model.config.hidden_size,
        "presence": fit_grounding_probe(grid, ["object" if p else "none" for p in present], model),
        "colour": fit_grounding_probe(grid[with_object], [colours[i] for i in with_object], model),
        "shape": fit_grounding_probe(grid[with_object], [shapes[i] for i in with_object], model),
    }
    table.append(result)
    _print_row(result)
    if args.json:
        atomic_write_text(args.json, json.dumps(table, indent=2) + "\n")


def _print_row(result: dict) -> None:
    cells = [f"{result[k][0]:.2f} ({result[k][1]:.2f})" for k in ("presence", "colour", "shape")]
    print(f"| {result['stage']} | {result['features']} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
