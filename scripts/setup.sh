#!/usr/bin/env bash
# Create ./.venv and install recot into it.
#   bash scripts/setup.sh          # the package (inference, CLI)
#   bash scripts/setup.sh train    # plus pre-training: TensorBoard and the EfficientNet-Lite0 weights
#   bash scripts/setup.sh test     # plus everything the test suite and the benchmarks need, and lmms-eval
#                                    # 0.7.3 for the plugin test, installed with --no-deps (it pins av<16)
# Without an NVIDIA GPU the CPU build of torch is installed first, so that no
# multi-GB CUDA build is pulled in as a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    "") target="." ; what="recot" ;;
    train) target=".[train,efficientnet]" ; what="recot with the training extras (TensorBoard, EfficientNet-Lite0)" ;;
    test) target=".[test,train,bench]" ; what="recot with the test, training and benchmark extras" ;;
    *) echo "usage: bash scripts/setup.sh [train|test]" >&2; exit 2 ;;
esac

say() { echo "setup: $*" >&2; }
python_bin=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $("$python_bin" --version 2>&1)"
    "$python_bin" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if .venv/bin/python -c "import torch" 2>/dev/null; then
    say "PyTorch $(.venv/bin/python -c 'import torch; print(torch.__version__)') is already installed"
elif command -v nvidia-smi >/dev/null 2>&1; then
    say "installing PyTorch with CUDA (an NVIDIA GPU was found; the largest download, several minutes)..."
    "${pip[@]}" torch
else
    say "installing PyTorch 2.13.0 for CPU (no NVIDIA GPU was found; the largest download, a few minutes)..."
    "${pip[@]}" "torch==2.13.0"
fi

say "installing $what and its dependencies (transformers, PyAV, ...)..."
"${pip[@]}" -e "$target"

# The lmms-eval plugin test needs lmms-eval itself. Its own requirements pin av<16 (a downgrade of PyAV, which
# recot tests with the current release) and pull in ~50 packages its CLI does not import for a local video task,
# so it goes in without them; the test extra holds the few it does import.
if [ "${1:-}" = test ]; then
    say "installing lmms-eval 0.7.3 without its dependencies (they pin av<16; the test extra has what its CLI imports)..."
    "${pip[@]}" --no-deps "lmms-eval==0.7.3"
fi

# The serve page test drives Debian's chromium through Playwright (no browser download). Installed where apt-get
# can (root on Debian/Ubuntu); elsewhere that one test skips and says why.
if [ "${1:-}" = test ] && ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        say "installing Debian's chromium for the web page test..."
        (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || say "chromium could not be installed: the page test will skip"
    else
        say "no chromium: the web page test will skip (install chromium to run it)"
    fi
fi
say "done: $(.venv/bin/recot --version) in .venv (run .venv/bin/recot --help)"
