#!/usr/bin/env bash
# Create ./.venv and install recot into it.
#   bash scripts/setup.sh          # the package (inference, CLI)
#   bash scripts/setup.sh test     # plus everything the test suite needs
# Without an NVIDIA GPU the CPU build of torch is installed first, so that no
# multi-GB CUDA build is pulled in as a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        "${pip[@]}" torch
    else
        "${pip[@]}" "torch==2.13.0"
    fi
fi

case "${1:-}" in
    test) "${pip[@]}" -e ".[test,train,bench]" ;;
    "") "${pip[@]}" -e . ;;
    *) echo "usage: bash scripts/setup.sh [test]" >&2; exit 2 ;;
esac
