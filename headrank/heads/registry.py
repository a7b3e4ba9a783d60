"""Head sets the project ships per model, as QRHead publishes them: keyed by the model's fingerprint (the sha256
of its GGUF file, or its folder's) and its hub id where known, so that `--model X` without `--heads` ranks with
X's selected heads when the project has them, and otherwise says that it falls back to all heads (ICR)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from headrank.artifact import ARTIFACTS


@dataclass(frozen=True)
class ShippedHeads:
    """One model's selected heads: the file holding them and how they were chosen."""

    name: str
    heads: Path
    fingerprints: frozenset[str]
    hub_ids: frozenset[str] = frozenset()
    selected_on: str = ""


REGISTRY: tuple[ShippedHeads, ...] = (
    ShippedHeads(
        name="SmolLM2-135M-Instruct Q4_1 (the embedded model)",
        heads=ARTIFACTS / "smollm2-135m-d15" / "headrank.json",
        fingerprints=frozenset({"gguf-sha256:b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}),
        hub_ids=frozenset({"HuggingFaceTB/SmolLM2-135M-Instruct"}),
        selected_on="DL21 + SciFact-train training lists, depth budget 15 chosen on validation (docs/benchmark.md)",
    ),
    ShippedHeads(
        name="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (scripts/fetch_qwen25_coder_1p5b.sh)",
        heads=ARTIFACTS / "qwen2.5-coder-1.5b-instruct" / "heads.json",
        fingerprints=frozenset({"gguf-sha256:cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"}),
        hub_ids=frozenset({"Qwen/Qwen2.5-Coder-1.5B-Instruct"}),
        selected_on="DL21 + SciFact-train training lists at full depth, depth budget 15 of 28 layers chosen on "
        "validation (benchmarks/models_1p5b.sh, docs/models.md)",
    ),
)


def shipped_heads(model: str) -> ShippedHeads | None:
    """The shipped head set of `model` (a hub id, folder or GGUF file), or None: none shipped, or a model that
    cannot be found (its load says why)."""
    from headrank.engine.backbone import BackboneError, model_fingerprint

    for entry in REGISTRY:
        if model in entry.hub_ids:
            return entry
    try:
        fingerprint = model_fingerprint(model)
    except (BackboneError, OSError):
        return None
    return next((entry for entry in REGISTRY if fingerprint in entry.fingerprints), None)


def say_fallback(model: str) -> None:
    """One line on stderr: no shipped heads for `model`, so every head scores, and how to select them."""
    print(
        f"headrank: no shipped head set for {model}: ranking with all heads (ICR); select heads with "
        f"`headrank select-heads --model {model} --dataset dl21 --out heads`, then pass --heads heads/heads.json",
        file=sys.stderr,
    )
