"""Trained rankers as a folder: headrank.json (everything needed to rebuild the ranker) + a LoRA adapter in
safetensors, unless validation preferred the heads untrained (then there is none). Nothing is pickled."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from headrank.engine.backbone import BackboneError
from headrank.engine.prompt import PromptTemplate
from headrank.engine.scoring import ScoringConfig
from headrank.heads.headset import HeadSet

if TYPE_CHECKING:  # artifacts are built by HeadRanker.from_artifact: no import cycle at run time
    from headrank.ranker import HeadRanker

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


def save_artifact(folder: str | Path, ranker: HeadRanker, peft_model, training: dict, data: dict) -> Path:
    """Write the adapter (peft's safetensors + config; none when `peft_model` is None) and the manifest that ties
    it to its base model."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if peft_model is not None:
        for config in peft_model.peft_config.values():  # not this machine's cache path
            config.base_model_name_or_path = ranker.backbone.source
        peft_model.save_pretrained(folder, safe_serialization=True)
        readme = folder / "README.md"
        if readme.exists():  # peft's model card template says nothing about this ranker
            readme.unlink()
    manifest = {
        "format": FORMAT,
        "base_model": ranker.backbone.source,
        "base_fingerprint": ranker.backbone.fingerprint,
        "heads": HeadSet.to_dict(ranker.heads)["heads"],
        "depth": ranker.depth,
        "template": asdict(ranker.config.template),
        "scoring": asdict(ranker.config.scoring),
        "order": ranker.config.order,
        "adapters": training.get("adapters", "query") if peft_model is not None else NO_ADAPTER,
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


def attach_adapter(ranker: HeadRanker, folder: Path, manifest: dict) -> None:
    """Put the trained LoRA into `ranker.model`: merged into the weights when it acts on every token (free at
    inference), switched off around the passage pass when it acts on the query span only."""
    from peft import PeftModel

    if ranker.heads.depth != manifest["depth"]:
        raise BackboneError(f"{folder}: depth {manifest['depth']} does not match its heads ({ranker.heads.depth})")
    if manifest.get("adapters") == NO_ADAPTER:
        return
    with warnings.catch_warnings():  # peft reads a property transformers deprecated: nothing the user can act on
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        adapter = PeftModel.from_pretrained(ranker.model, folder).eval()  # injects LoRA into ranker.model
    if manifest.get("adapters", "query") == "all":
        ranker.merged(adapter)
    else:
        ranker.adapt(adapter, query_only=True)
