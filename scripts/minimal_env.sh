#!/usr/bin/env bash
# The GPU machine's stack on the CPU: .venv-minimal holds only torch, transformers 5.17, peft and accelerate (and
# what they pull in), as the lent GPU machine does (no fastapi, ir-measures, gguf, matplotlib, ... and no network),
# and runs what benchmarks/gpu.sh runs there, from the checkout (PYTHONPATH, not an installed package), on tiny
# shapes. A module-level import of anything else on that path fails here before it costs a GPU session.
# usage: scripts/minimal_env.sh [OUT]      (OUT default: runs/minimal)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/minimal}
venv=.venv-minimal
python3 -m venv --clear "$venv"  # a clean one each time: nothing left from an earlier run counts
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "torch==2.13.0"  # the GPU machine has 2.11; 2.13.0 is the CPU build on this disk
"$venv/bin/pip" install -q "transformers==5.17.0" peft accelerate
py="$venv/bin/python"
# the environment must stay minimal: none of the project's other dependencies may have come along, nor headrank
# itself (-I: only the venv's own site-packages, not the checkout in the working directory)
"$py" -I - <<'PY'
import importlib.util
import sys

absent = ["fastapi", "uvicorn", "starlette", "ir_measures", "pytrec_eval", "gguf", "matplotlib", "bm25s", "Stemmer",
          "pandas", "pyarrow", "ray", "sentence_transformers", "pyterrier", "cohere", "pytest", "headrank"]
present = [name for name in absent if importlib.util.find_spec(name) is not None]
if present:
    sys.exit(f"{sys.prefix} is not minimal: it has {present}")
import torch, transformers  # noqa: E401
print("minimal env: torch", torch.__version__, "transformers", transformers.__version__)
PY
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
rm -rf "$out"
# gpu.sh's checks on the CPU; the scheduler on tiny shapes (Qwen3-0.6B takes many minutes on 2 cores)
"$py" -m benchmarks.gpu_checks --device cpu --scheduler-shapes tiny --scheduler-requests 32 --out "$out"
# gpu.sh's throughput table on tiny shapes, generation included
"$py" -m benchmarks.throughput --shapes tiny --device cpu --top-k 20 --queries 3 --budgets 4096 --repeats 1 \
  --generation-batch 2 --agreement 3 --peak-size 256 --out "$out/throughput"
# gpu_checks reports a failed check as a row and exits 0 (gpu.sh must go on to the tables): fail here instead
"$py" - "$out" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = json.loads((out / "gpu_checks.json").read_text())["rows"]
failed = [r for r in rows if r["passed"] is False]
throughput = json.loads((out / "throughput" / "throughput.json").read_text())
measured = [r for table in throughput["tables"].values() for r in table["rows"] if r["queries/s"]]
if len(rows) != 4 or failed or not measured:
    sys.exit(f"minimal env: {len(rows)} checks, failed: {failed}, {len(measured)} throughput rows measured")
print(f"minimal env: {len(rows)} device checks ran on the CPU, none failed; {len(measured)} throughput rows")
PY
