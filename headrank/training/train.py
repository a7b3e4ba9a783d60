"""`headrank train` end to end: split the labelled queries, fit, keep the best validation adapter, write the
artifact with its history and learning curves."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from headrank.calibration import Calibration, ListEvidence, fit_calibration
from headrank.ranker import HeadRanker
from headrank.training.config import TrainConfig
from headrank.training.curves import plot_curves
from headrank.training.lists import TrainingList, load_training_data
from headrank.training.trainer import PreferenceTrainer


def train_artifact(
    ranker: HeadRanker,
    config: TrainConfig,
    data_dir: Path,
    datasets: Sequence[str],
    out: Path,
    limit: int | None = None,
    resume: bool = False,
    progress: bool = True,
    cache_dir: Path | None = None,
    selection: dict | None = None,
) -> Path:
    """Train on the named datasets (split by query into train and validation) and write the artifact of the
    best validation checkpoint, with history.json and learning_curves.png, to `out`. When that checkpoint is
    step 0 (no step beat the untrained heads on validation) the artifact holds the heads without an adapter.
    `selection` (how the heads were chosen) goes into the artifact's data record."""
    from headrank.artifact import save_artifact

    out = Path(out)
    data = load_training_data(datasets, data_dir, config.list_size, config.validation, config.seed, limit)
    identity = {
        "base_model": ranker.backbone.source,
        "base_fingerprint": ranker.backbone.fingerprint,
        "heads": [f"{layer}-{head}" for layer, head in ranker.heads.heads],
        "head_weights": list(ranker.heads.weight_vector()),
        "datasets": list(datasets),
        "limit": limit,
        "train_qids": [item.qid for item in data.train],
        "validation_qids": [item.qid for item in data.validation],
    }
    trainer = PreferenceTrainer(ranker, config, cache_dir, identity)
    if resume and not trainer.resume(out / "checkpoints"):
        raise ValueError(f"--resume: no checkpoint under {out / 'checkpoints'}")
    start = time.perf_counter()
    history = trainer.fit(data.train, data.validation, out / "checkpoints", progress)
    if trainer.best_state is not None:
        trainer.load_adapter(trainer.best_state)
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    plot_curves(history, out / "learning_curves.png", _title(config, data.describe()))
    best, first = trainer.best_point(), history["evals"][0]
    step_seconds = [h["seconds"] for h in history["steps"]]
    training = {
        **asdict(config),
        "steps": trainer.steps_done,
        "best_step": history["best_step"],
        "stopped_early": history.get("stopped_early"),
        "validation_step0": first["validation"],
        "validation_best": best["validation"],
        "train_sample_best": best["train"],
        "seconds_per_step": float(np.mean(step_seconds)) if step_seconds else None,
        "seconds_this_session": time.perf_counter() - start,
        "prefix_passes": trainer.prefixes.computed if trainer.prefixes is not None else None,
    }
    untrained_won = history["best_step"] == 0 and trainer.steps_done > 0
    described = data.describe() | ({"heads_selection": selection} if selection else {})
    folder = save_artifact(out, ranker.recipe(), None if untrained_won else trainer.adapter, training, described)
    calibrate_artifact(folder, data.validation, ranker.backbone.precision.dtype, ranker.family.device.type)
    return folder


def calibrate_artifact(folder: Path, lists: Sequence[TrainingList], dtype: str, device: str) -> Calibration | None:
    """Fit the artifact's calibrated relevance (calibration.py) on the lists that chose its checkpoint, which it
    never trained on, scored by the ranker as it ships (loaded back from `folder`), and store it there; none
    (and no file) when those lists cannot fit one: no list, or no relevant document among them."""
    shipped = HeadRanker.from_artifact(folder, dtype=dtype, device=device)
    labelled = []
    for item in lists:
        passes = shipped.score_lists(item.query, item.texts)
        evidence = ListEvidence.from_passes(
            shipped.combine(len(item.texts), passes), passes, shipped.heads.weight_vector()
        )
        labelled.append((evidence, item.grades >= item.relevant_grade))
    fitted_on = {"lists": len(lists), "qids": [item.qid for item in lists], "role": "the artifact's validation lists"}
    try:
        calibration = fit_calibration(labelled, fitted_on=fitted_on)
    except ValueError:
        return None
    calibration.save(folder)
    return calibration


def _title(config: TrainConfig, data: dict) -> str:
    return (
        f"{'+'.join(data['datasets'])}: {data['lists']} train / {len(data['validation_qids'])} validation lists; "
        f"loss {config.loss}, adapters {config.adapters}, order {config.order}, lr {config.lr}, beta {config.beta}"
    )
