#!/usr/bin/env bash
# The default model's sft runs on one GPU, for a wall-time budget (README, "The default model"):
#   1. the 400 training videos in 8 parallel shards (make-qa-data --seed), merged into runs/default/data/train:
#      train.ground.json (questions, description, six 16-turn grounding conversations, the object turns) and
#      train.dense.json (its rows that configs/default/sft_dense.yaml trains on: the first two conversations);
#   2. the compressor pre-training (configs/default/pretrain.yaml, pretrain_passthrough.yaml) unless
#      runs/default/pretrain*/ has its weights;
#   3. the four GPU configs side by side (configs/default/sft_{dense,ground,ground_compressor,
#      ground_passthrough}_gpu.yaml), each for START steps (inside their 100-step warm-up, where the schedule does not depend on the total), then
#      resumed with --steps set so that each ends by the budget at its measured step time. A run resumed that
#      way equals one started with those steps. A run still going at the budget is stopped: its last checkpoint
#      (every 100 steps) is what comes back.
# Each run leaves OUT/NAME.tar: its metrics.csv, log and trained weights (model/ when it finished, else the last
# checkpoint's model.safetensors and meta.json); OUT/driver.log says what happened when.
# The tiny LLM leaves the GPU mostly idle, so the four share it, with 4 CPU threads each. OUT holds 5 files (the
# device tool brings back 8 at most): the logs are inside the tars.
# Usage: scripts/default_gpu.sh OUT SECONDS [PYTHON] [VIDEOS] [START]   (PYTHON: default python; an interpreter
# that imports recot; VIDEOS: 400; START: 60)
set -uo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/default_gpu.sh OUT SECONDS [PYTHON] [VIDEOS] [START]"
OUT=${1:?$usage}
BUDGET=${2:?$usage}
PY=${3:-python}
VIDEOS=${4:-400}
START=${5:-60}
R="$PY -m recot.cli"
D=runs/default/data
RUNS=(sft_dense_gpu sft_ground_gpu sft_ground_compressor_gpu sft_ground_passthrough_gpu)
T0=$SECONDS
LOGS=runs/default/logs
mkdir -p "$OUT" "$D" "$LOGS"
OUT=$(cd "$OUT" && pwd)
log() { echo "[$((SECONDS - T0)) s] $*" | tee -a "$OUT/driver.log"; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONUNBUFFERED=1

# 1. Data, in shards.
SHARDS=8
mkdir -p "$D/shards"
per=$(((VIDEOS + SHARDS - 1) / SHARDS))
for ((k = 0; k < SHARDS; k++)); do
  first=$((k * per))
  n=$((VIDEOS - first < per ? VIDEOS - first : per))
  ((n > 0)) || continue
  $R make-qa-data --split train --count "$n" --seed "$first" --out "$D/shards/$k" --minutes 2 5 --size 64 \
    --describe --ground-turns 16 --ground-conversations 6 --object-turns --no-progress > "$D/shards/$k.log" 2>&1 &
done
wait
$PY - "$D" "$VIDEOS" <<'EOF' || { log "data: failed"; cat "$D"/shards/*.log; exit 1; }
import json, os, sys
from pathlib import Path

data = Path(sys.argv[1])
train, rows, manifest = data / "train", [], []
(train / "videos" / "train").mkdir(parents=True, exist_ok=True)
for shard in sorted((p for p in (data / "shards").glob("[0-9]*") if p.is_dir()), key=lambda p: int(p.name)):
    rows += json.loads((shard / "train.json").read_text())
    manifest += (shard / "train.videos.jsonl").read_text().splitlines()
    for video in (shard / "videos" / "train").iterdir():
        os.replace(video, train / "videos" / "train" / video.name)
dense = ("describe", "when", "attribute", "count", "order", "scene", "ground0", "ground1")
for name, kept in (("ground", rows), ("dense", [r for r in rows if r["id"].rsplit("-", 1)[1] in dense])):
    tmp = train / f".train.{name}.json.tmp"
    tmp.write_text(json.dumps(kept))
    os.replace(tmp, train / f"train.{name}.json")
(train / "train.videos.jsonl").write_text("\n".join(manifest) + "\n")
print(f"{len(manifest)} videos, {len(rows)} rows")
sys.exit(0 if len(manifest) == int(sys.argv[2]) else f"{len(manifest)} videos made of {sys.argv[2]}")
EOF
log "data: $(ls "$D/train/videos/train" | wc -l) videos; $(grep -h written "$D"/shards/*.log | head -1)"

# 2. The pre-trained compressors (the recipe's, and the one with the hue bins passed around it).
(cd "$D" && ls train/videos/train/*.mp4 | sort | head -40) > "$D/pretrain.txt"
for name in pretrain pretrain_passthrough; do
  if [[ ! -f runs/default/$name/compressor.safetensors ]]; then
    $R pretrain-compressor --config "configs/default/$name.yaml" --no-progress > "$LOGS/$name.log" 2>&1 ||
      { log "$name: failed"; tail -20 "$LOGS/$name.log"; exit 1; }
  fi
  log "$name: $(tail -1 "runs/default/$name/metrics.csv" 2>/dev/null || echo carried)"
done

# 3. The runs: START steps each, side by side.
for name in "${RUNS[@]}"; do
  $R train --config "configs/default/$name.yaml" --steps "$START" --no-progress > "$LOGS/$name.log" 2>&1 &
done
wait
log "started: $(for n in "${RUNS[@]}"; do tail -1 "$LOGS/$n.log"; done | tr '\n' ' ')"

# The step time of each (median of its last three logged steps), then the steps that fit the budget: the resume
# itself costs some 20 s, the export some 10 (45 s kept, and 20% of slack).
left=$((BUDGET - (SECONDS - T0) - 45))
pids=()
for name in "${RUNS[@]}"; do
  if [[ ! -f runs/default/$name/checkpoints/latest ]]; then
    log "$name: failed to start: $(tail -3 "$LOGS/$name.log")"
    continue
  fi
  steps=$($PY - "runs/default/$name/metrics.csv" "$left" "$START" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
step_time = statistics.median(float(r["seconds"]) for r in rows[-3:])
print(max(int(sys.argv[3]) + 1, int(sys.argv[3]) + int(int(sys.argv[2]) / step_time / 1.2)))
EOF
)
  log "$name: $(tail -1 "runs/default/$name/metrics.csv" | cut -d, -f1,2,10) (step, loss, seconds); resuming to step $steps"
  rm -rf "runs/default/$name/model"  # the START-step model: only a finished run's stays
  $R train --config "configs/default/$name.yaml" --resume --steps "$steps" --no-progress >> "$LOGS/$name.log" 2>&1 &
  pids+=($!)
done
deadline=$((T0 + BUDGET - 10))
running() { for pid in "${pids[@]}"; do kill -0 "$pid" 2> /dev/null && return 0; done; return 1; }
gpu_logged=0
while ((SECONDS < deadline)) && running; do
  sleep 2
  if ((!gpu_logged && SECONDS - T0 > BUDGET / 2)) && command -v nvidia-smi > /dev/null; then
    log "GPU: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
    gpu_logged=1
  fi
done
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2> /dev/null && { log "stopping $pid at the budget"; kill "$pid"; }
done
wait

# 4. What comes back.
for name in "${RUNS[@]}"; do
  run=runs/default/$name
  [[ -f $run/checkpoints/latest ]] || continue
  files=("$run/metrics.csv")
  if [[ -f $run/model/model.safetensors ]]; then
    files+=("$run/model")
  else
    latest=$run/checkpoints/$(cat "$run/checkpoints/latest" 2>/dev/null)
    files+=("$latest/model.safetensors" "$latest/meta.json")
  fi
  cp "$LOGS/$name.log" "$run/train.log" 2> /dev/null
  tar -cf "$OUT/.$name.tar" "${files[@]}" "$run/train.log" && mv "$OUT/.$name.tar" "$OUT/$name.tar"
  log "$name: $(tail -1 "$run/metrics.csv" | cut -d, -f1,2,10) -> $(du -h "$OUT/$name.tar" | cut -f1)"
done
log "done"
