"""Trained rankers as a folder: headrank.json (everything needed to rebuild the ranker) + a LoRA adapter in
safetensors, unless validation preferred the heads untrained (then there is none). Nothing is pickled."""

from __future__ import annotations

import json
import time
from pathlib import Path

from headrank.engine.adapters import Adapter
from headrank.engine.backbone import BackboneError
from headrank.engine.prompt import PromptTemplate
from headrank.engine.scoring import ScoringConfig
from headrank.heads.headset import HeadSet

MANIFEST = "headrank.json"
ARTIFACTS = Path(__file__).parent / "artifacts"
DEFAULT_ARTIFACT = ARTIFACTS / "smollm2-135m-d15-dpo"
"""the default ranker for the embedded model: the 16 heads of UNTRAINED_ARTIFACT with a query-span LoRA adapter
trained on every usable DL21 and SciFact-train list (benchmarks/training_all_data.sh regularised), shipped because
it beat its untrained heads on the 150 validation lists at paired p < 0.05, the rule fixed before the run."""
UNTRAINED_ARTIFACT = ARTIFACTS / "smollm2-135m-d15"
"""the same heads without an adapter: the default before, and the baseline that training has to beat."""
PREVIOUS_ARTIFACT = ARTIFACTS / "smollm2-135m-dl21"
"""an earlier default: heads in layers 12-22 (23 layers run) and a LoRA adapter trained on TREC DL21."""
FORMAT = "headrank-artifact/1"


def is_artifact(path: str | Path) -> bool:
    return (Path(path).expanduser() / MANIFEST).is_file()


NO_ADAPTER = "none"
"""the `adapters` of an artifact whose training did not beat its untrained heads on validation: an adapter at
its initial state changes nothing (LoRA's B is zero), so none is shipped and none runs."""


def save_artifact(folder: str | Path, recipe: dict, adapter: Adapter | None, training: dict, data: dict) -> Path:
    """Write the adapter (none when training did not beat the untrained heads) and the manifest that ties it to
    its base model; `recipe` is the ranker's (`HeadRanker.recipe`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if adapter is not None:
        adapter.save(folder, recipe["base_model"])
    manifest = {
        "format": FORMAT,
        **recipe,
        "adapters": training.get("adapters", "query") if adapter is not None else NO_ADAPTER,
        "training": training,
        "data": data,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def read_manifest(folder: str | Path) -> dict:
    manifest = json.loads((Path(folder) / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise BackboneError(f"{folder}: unknown artifact format {manifest.get('format')!r} (expected {FORMAT})")
    return manifest


def ranker_parts(manifest: dict) -> dict:
    """The RankerConfig fields an artifact fixes: heads, scoring, prompt and input order."""
    return {
        "heads": HeadSet.from_dict({"heads": manifest["heads"]}),
        "scoring": ScoringConfig(**manifest["scoring"]),
        "template": PromptTemplate(**manifest["template"]),
        "order": manifest["order"],
    }


def check_base(folder: Path, manifest: dict, fingerprint: str) -> None:
    if fingerprint != manifest["base_fingerprint"]:
        raise BackboneError(
            f"{folder} was trained on {manifest['base_model']} ({manifest['base_fingerprint'][:24]}...), "
            f"but the model loaded is {fingerprint[:24]}...: pass the same base model"
        )


def adapter_mode(folder: Path, manifest: dict, depth: int) -> str:
    """How the artifact's adapter runs on a ranker of `depth`: NO_ADAPTER, "all" (merged into the weights: free
    at inference) or "query" (switched off around the passages' pass)."""
    if depth != manifest["depth"]:
        raise BackboneError(f"{folder}: depth {manifest['depth']} does not match its heads ({depth})")
    return manifest.get("adapters", "query")
