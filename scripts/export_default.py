"""Export a trained checkpoint as the shipped default model: fp16 weights, the byte tokenizer, the recipe in ``extra``.

    python scripts/export_default.py runs/default/curriculum5/model src/recot/weights/default

The written ``config.json`` records, under ``recot.extra.training``, how the
weights were made (recipe, configs, steps, data, measured wall times read from
the runs' ``metrics.csv``), so the checkpoint describes itself. A stage whose run
folder is not there keeps what the source checkpoint already records of it (a stage
trained from the shipped model, in a checkout without the earlier runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from recot.model.tokenizer import build_byte_tokenizer  # noqa: E402
from recot.model.videoxl_pro import VideoXLPro  # noqa: E402


def _run_summary(run: Path) -> dict:
    """Steps, final loss and summed step seconds of a run's ``metrics.csv`` (empty when absent)."""
    metrics = run / "metrics.csv"
    if not metrics.is_file():
        return {}
    with metrics.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}
    return {"steps": int(rows[-1]["step"]), "final_loss": round(float(rows[-1]["loss"]), 4)}


def _pruning_summary(decisions: Path) -> dict:
    """Rows, kept rows and drops by reason of a ``recot prune-data`` decisions file (empty when absent)."""
    if not decisions.is_file():
        return {}
    rows = [json.loads(line) for line in decisions.read_text().splitlines()]
    dropped = Counter(reason for row in rows if not row["kept"] for reason in row["reasons"])
    return {"rows": len(rows), "kept": sum(row["kept"] for row in rows), "dropped_by_reason": dict(dropped)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="trained checkpoint directory (recot train's <output_dir>/model)")
    parser.add_argument("target", type=Path, help="where to write the shipped model (replaced)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "default", help="the recipe's run folder")
    parser.add_argument("--note", default="", help="free text recorded with the recipe (e.g. measured wall times)")
    args = parser.parse_args()
    model = VideoXLPro.from_pretrained(args.source, dtype=torch.float32).to(torch.float16).eval()
    extra = dict(model.config.extra)
    extra.pop("untrained", None)
    recorded = extra.get("training", {})
    stages = ("pretrain", "curriculum1", "curriculum2", "curriculum3", "curriculum4", "curriculum5")
    pruning = _pruning_summary(args.runs / "data" / "train" / "train.stages34.kept.decisions.jsonl")
    if not pruning:
        pruning = {k: v for k, v in recorded.get("pruning", {}).items() if k != "what"}
    extra["training"] = {
        "recipe": "scripts/train_default.sh (configs/default/pretrain.yaml, curriculum1_identify.yaml, "
        "curriculum2_identify.yaml, curriculum3_dense.yaml, curriculum4_objects.yaml, curriculum5_selector.yaml)",
        "data": "recot make-qa-data --describe --ground-turns 16 --ground-conversations 2 --object-turns: 400 train "
        "videos of 2-5 min at 1 fps, 64 px (seeds 0-399 of the train split), each with its five questions, a timed "
        "description, two conversations of 16 'what is on screen at mm:ss' turns and one of its ten object "
        "questions; the grounding turns' object turns alone (synthetic_qa.turns_of_type) are train.identify.json",
        "curriculum": "1-2: the object turns alone (no time shift), 1,500 steps, then 1,500 more at a lower rate; "
        "3: the dense rows plus the object turns, half the samples moved to a random start in the first 8,192 s; "
        "4: those rows plus each video's ten object questions, under the 64-token selector budget; "
        "5: the same rows, the selector also trained to keep the frame groups that show a question's objects "
        "(the rows' evidence, optim.selector_loss_weight)",
        "stages": {name: _run_summary(args.runs / name) or recorded.get("stages", {}).get(name, {}) for name in stages},
        "pruning": {
            "what": "recot prune-data of stages 3 and 4's rows (train.objects.json + train.identify.json), judged by "
            "stage 2's model, default thresholds; stages 3 to 5 train on the kept rows",
            **pruning,
        },
        "frozen": "vision tower (ImageNet EfficientNet-Lite0 trunk), pre-trained ReCoT compressor",
        "dtype": "float16 (trained in float32)",
        "note": args.note,
    }
    model.config.extra = extra
    model.save_pretrained(args.target, tokenizer=build_byte_tokenizer())
    size = sum(p.stat().st_size for p in args.target.iterdir())
    print(f"wrote {args.target} ({size / 2**20:.1f} MiB): {json.dumps(extra['training']['stages'])}")


if __name__ == "__main__":
    main()
