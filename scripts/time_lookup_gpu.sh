#!/usr/bin/env bash
# Four runs of scripts/probe_time_lookup.py side by side on one GPU, each for the same wall time: the lite48 LLM
# from scratch, 8 questions a pseudo-video, 8-24 groups, batches of 64 built by worker processes, the clock as
# bytes or as 2 tokens (--clock-tokens), with or without a curriculum from 2 groups. Each run leaves OUT/NAME.tar
# (its JSON, log and trained LLM from --save) and OUT/NAME.json; the README's "Where the time lookup fails" quotes
# them. The tiny LLM does not fill the GPU, so the four share it; ~4 CPU cores each (1 trainer + 3 batch writers).
# Flags after PYTHON go to all four runs (e.g. --time-vector).
# Usage: scripts/time_lookup_gpu.sh OUT SECONDS [DEVICE] [PYTHON] [FLAG...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/time_lookup_gpu.sh OUT SECONDS [DEVICE] [PYTHON]}
SECONDS_EACH=${2:?usage: scripts/time_lookup_gpu.sh OUT SECONDS [DEVICE] [PYTHON]}
DEVICE=${3:-cuda}
PY=${4:-python}
shift $(($# < 4 ? $# : 4))
mkdir -p "$OUT/runs"
common=(--preset lite48 --questions 8 --groups 8 24 --batch-size 64 --lr 1e-3 --warmup 200 --steps 60000
        --eval-every 1000 --eval-samples 128 --workers 3 --device "$DEVICE" --time-limit "$SECONDS_EACH" "$@")
declare -A extra=([bytes]="" [clock]="--clock-tokens" [bytes_curriculum]="--curriculum 6000"
                  [clock_curriculum]="--clock-tokens --curriculum 6000")
for name in "${!extra[@]}"; do
  mkdir -p "$OUT/runs/$name"
  # shellcheck disable=SC2086  # the extra flags are meant to split
  $PY scripts/probe_time_lookup.py "${common[@]}" ${extra[$name]} --json "$OUT/runs/$name/lookup.json" \
    --save "$OUT/runs/$name/llm" > "$OUT/runs/$name/$name.log" 2>&1 &
done
wait
status=0
for name in "${!extra[@]}"; do
  cp "$OUT/runs/$name/lookup.json" "$OUT/$name.json" 2>/dev/null || status=1
  tar -C "$OUT/runs" -cf "$OUT/$name.tar" "$name"
  echo "== $name"; grep -E '^\| [0-9]' "$OUT/runs/$name/$name.log" | tail -4
done
rm -rf "$OUT/runs"
exit $status
