#!/usr/bin/env bash
# Reproduces the default model from scratch on CPU, with recot's own pipeline:
#   1. generate the synthetic long-video QA data (recot make-qa-data): 400 training videos of 2-5 minutes, each with
#      its five questions, a timed description (--describe), two conversations of 16 "what is on screen at
#      mm:ss" turns (--ground-turns 16 --ground-conversations 2) and one of its ten object questions
#      (--object-turns); held-out test and ood videos of 256 to 8,192 frames,
#   2. pre-train the ReCoT compressor on 40 of the generated videos (recot pretrain-compressor),
#   3. stage sft from the lite48 preset (clock grounding, time vectors) with that compressor, frozen (recot train:
#      LLM + projector + selector; caches the frozen tower's features), as a curriculum: the object turns of the
#      grounding conversations alone (train.identify.json; configs/default/curriculum1_identify.yaml, then
#      curriculum2_identify.yaml at a lower rate), then step 1's other rows (train.dense.json) plus those turns, half moved
#      to a random start in the first 8,192 s (curriculum3_dense.yaml), then those rows plus each video's ten
#      object questions under the 64-token selector budget (curriculum4_objects.yaml), then the same rows with the
#      selector taught to keep the frame groups that show each object question's objects (the rows' evidence;
#      curriculum5_selector.yaml); stages 3 to 5 train on their rows as recot prune-data keeps them (judged by
#      stage 2's model). No align stage: see the README ("The default model") for why,
#   4. export the fp16 weights (scripts/export_default.py) to runs/default/export; copied into
#      src/recot/weights/default they become the default model,
#   5. measure it (benchmarks/default_model.py).
# Everything goes under runs/default/ (git-ignored). Deterministic for the seeds in the configs.
# Measured on this project's 2 shared CPU cores: data about 6 min, pre-training 2 min, step 3 about 2 h 40 min
# (1.2-2.1 s a step of 8 once the features of the 400 videos are cached: 1,500 + 1,500 + 1,200 + 800 + 800
# steps), the benchmark about 10 min.
# Usage: scripts/train_default.sh [PYTHON]   (default: python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python}
R="$PY -m recot.cli"
D=runs/default/data
mkdir -p "$D"
# 1. Data: 400 training videos of 2-5 minutes at 1 fps, 64 px (the model sees 48 px); held-out test videos.
$R make-qa-data --split train --count 400 --out "$D/train" --minutes 2 5 --size 64 --describe \
    --ground-turns 16 --ground-conversations 2 --object-turns --no-progress
$PY - "$D/train" <<'EOF'  # step 3's rows: without the object questions, their object turns alone, all; what is pruned
import json, sys
from recot.data.atomic import atomic_write_text
from recot.data.synthetic_qa import turns_of_type
folder = sys.argv[1]
rows = json.load(open(f"{folder}/train.json"))
dense = [row for row in rows if not row["id"].endswith("-objects")]
identify = turns_of_type(dense, "identify")
for name, kept in (("dense", dense), ("identify", identify), ("objects", rows), ("stages34", rows + identify)):
    atomic_write_text(f"{folder}/train.{name}.json", json.dumps(kept))
EOF
for n in 256 1024 3600 8192; do
  m=$($PY -c "print($n / 60)")
  long=$([ "$n" -gt 1024 ] && echo 1 || echo 0)  # 5 videos of an hour or more, else 20 test and 10 ood videos
  $R make-qa-data --split test --count "$([ $long = 1 ] && echo 5 || echo 20)" --out "$D/test$n" --minutes "$m" \
      --size 64 --ground-turns 8 --no-progress
  $R make-qa-data --split ood --count "$([ $long = 1 ] && echo 5 || echo 10)" --out "$D/ood$n" --minutes "$m" \
      --size 64 --ground-turns 8 --no-progress
done
# 2. ReCoT pre-training on the first 40 training videos.
# (the list's paths are read relative to the list file's folder)
(cd "$D" && ls train/videos/train/*.mp4 | sort | head -40) > "$D/pretrain.txt"
$R pretrain-compressor --config configs/default/pretrain.yaml --no-progress
# 3. SFT, a curriculum: the object at a time alone first (its loss sits at the marginal for ~600 steps), then all.
$R train --config configs/default/curriculum1_identify.yaml --steps 800 --no-progress
$R train --config configs/default/curriculum1_identify.yaml --resume --no-progress  # the schedule stretched to 1,500
$R train --config configs/default/curriculum2_identify.yaml --stop-after 1500 --no-progress
# Dataset pruning (docs/pruning.md) of stages 3 and 4's rows, judged by stage 2's model, the first trained one: their
# rows in one file (train.stages34.json, step 1's: every row and the object turns), pruned once; each stage's files
# keep the kept rows.
$R prune-data "$D/train/train.stages34.json" --out "$D/train/train.stages34.kept.json" \
    --report "$D/train/pruning_report.md" --model runs/default/curriculum2/model --cache-dir runs/default/prune_cache \
    --no-progress
$PY - "$D/train" <<'EOF'
import json, sys
from recot.data.atomic import atomic_write_text
folder = sys.argv[1]
kept = {row["id"] for row in json.load(open(f"{folder}/train.stages34.kept.json"))}
for name in ("dense", "identify", "objects"):
    rows = json.load(open(f"{folder}/train.{name}.json"))
    atomic_write_text(f"{folder}/train.{name}.pruned.json", json.dumps([row for row in rows if row["id"] in kept]))
EOF
$R train --config configs/default/curriculum3_dense.yaml --no-progress
$R train --config configs/default/curriculum4_objects.yaml --no-progress
$R train --config configs/default/curriculum5_selector.yaml --no-progress
# 4. Export.
$PY scripts/export_default.py runs/default/curriculum5/model runs/default/export
# 5. Measure it (benchmarks/results/default_model.{json,md}): held-out accuracy by type x length, demo speed, memory.
$PY benchmarks/default_model.py --model runs/default/curriculum5/model --data "$D" --videos 256=20 1024=10 3600=5 8192=5
