#!/usr/bin/env bash
# The full benchmark (27 configurations x 2 modes, memory, scaling in T): prints the table and
# writes bench/results/latest.json and bench/results/latest.md. About 15 minutes on 2 cores.
# Run it on an otherwise idle machine (the benchmark warns when the load average is high).
# Extra arguments go to the benchmark, e.g. `bench/run_full.sh --cells lstm`. onnxruntime's
# inference is timed beside PyTorch's when it is installed (the bench extra has it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
mkdir -p bench/results
AGAINST=torch
"$PYTHON" -c "import onnx, onnxruntime" 2>/dev/null && AGAINST=torch,onnxruntime
"$PYTHON" -m rnnlab.bench --against "$AGAINST" --out bench/results/latest.json \
    --markdown bench/results/latest.md "$@"
echo "wrote bench/results/latest.json and bench/results/latest.md"
