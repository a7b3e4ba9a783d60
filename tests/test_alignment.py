"""ALPS pairs, the preference loss and regularizer, training steps, resume, and trained artifacts."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from headrank.alignment import (
    PreferenceTrainer,
    TrainConfig,
    TrainingList,
    alps_pairs,
    distribution_regularizer,
    middle_zone,
    preference_loss,
    random_pairs,
    train_artifact,
)
from headrank.artifact import load_artifact, read_manifest
from headrank.headset import HeadSet
from headrank.ranker import HeadRanker, RankerConfig
from headrank.scoring import encode_prefix
from headrank.testing import save_tiny, tiny_backbone

from .conftest import DOCS, FLEA_QUERY

GRADES = np.array([0, 1, 2, 3, 0, 1, 2, 0, 3, 1, 0, 2], dtype=float)


def test_alps_pairs_differ_by_exactly_one_grade():
    config = TrainConfig(max_pairs=200)
    scores = np.random.default_rng(0).normal(size=len(GRADES))
    pairs = alps_pairs(GRADES, scores, config, random.Random(0))
    assert pairs and all(GRADES[p] - GRADES[m] == 1 for p, m in pairs)
    assert len(pairs) == int((GRADES[:, None] - GRADES[None, :] == 1).sum())  # all of them when k is large
    assert alps_pairs(GRADES, scores, config, random.Random(3)) == alps_pairs(GRADES, scores, config, random.Random(3))
    assert alps_pairs(np.array([0.0, 2.0, 0.0]), np.zeros(3), config, random.Random(0)) == []


def test_alps_prefers_hard_pairs_and_the_middle():
    config = TrainConfig(max_pairs=3, margin=0.1)
    scores = GRADES.copy()  # every pair well ordered ...
    scores[5] = -10.0  # ... except those with position 5 (grade 1) as d+
    pairs = alps_pairs(GRADES, scores, config, random.Random(0))
    assert all(p == 5 for p, _ in pairs)
    zone = middle_zone(len(GRADES))
    counts = {"middle": 0, "edge": 0}
    easy = TrainConfig(max_pairs=1, margin=-100.0, middle_boost=5.0)
    for seed in range(300):
        ((p, m),) = alps_pairs(GRADES, GRADES, easy, random.Random(seed))
        counts["middle" if zone[p] or zone[m] else "edge"] += 1
    assert counts["middle"] > 2 * counts["edge"]


def test_random_pairs_ablation_ignores_adjacency():
    pairs = random_pairs(GRADES, TrainConfig(max_pairs=500), random.Random(0))
    assert all(GRADES[p] > GRADES[m] for p, m in pairs)
    assert any(GRADES[p] - GRADES[m] > 1 for p, m in pairs)


def test_loss_and_regularizer_values():
    s_ref = torch.zeros(4)
    s = torch.tensor([2.0, 0.0, 0.0, 0.0])
    assert float(preference_loss(s, s_ref, [(0, 1)], beta=1.0)) == pytest.approx(
        float(-torch.log(torch.sigmoid(torch.tensor(2.0))))
    )
    assert float(preference_loss(s, s_ref, [(1, 0)], beta=0.5)) == pytest.approx(
        float(-torch.log(torch.sigmoid(torch.tensor(-1.0))))
    )
    flat = distribution_regularizer(torch.zeros(8), TrainConfig(gamma=1.0, eta=1.0))
    assert float(flat) == pytest.approx(1.0)  # uniform: normalised entropy 1, no variance
    spread = torch.tensor([0.0, 0.0, -3.0, 3.0, -3.0, 3.0, 0.0, 0.0])
    assert float(distribution_regularizer(spread, TrainConfig(gamma=0.0, eta=1.0))) == pytest.approx(
        -float(spread[2:6].var())
    )


def _ranker():
    return HeadRanker(tiny_backbone(), RankerConfig(heads=HeadSet.of([(0, 1), (1, 0), (2, 3)]), order="forward"))


def _item():
    return TrainingList("q1", FLEA_QUERY, DOCS, np.array([0.0, 1.0, 3.0, 2.0, 1.0]))


def test_one_step_lowers_the_loss_and_changes_only_adapters():
    ranker = _ranker()
    assert ranker.depth == 3
    trainer = PreferenceTrainer(ranker, TrainConfig(lr=5e-3, gamma=0.0, eta=0.0, max_pairs=50))
    frozen = {k: v.clone() for k, v in trainer.peft.named_parameters() if "lora_" not in k}
    adapters = {k: v.clone() for k, v in trainer.peft.named_parameters() if "lora_" in k}
    assert adapters and all(not v.requires_grad for k, v in trainer.peft.named_parameters() if "lora_" not in k)
    prompt, grades = trainer._prompt(_item(), epoch=0)
    pairs = [(int(p), int(m)) for p, m in zip(*np.nonzero(grades[:, None] - grades[None, :] == 1))]

    def loss() -> float:
        with torch.no_grad():
            s_ref, s_theta = trainer.reference_and_current(prompt)
            return float(preference_loss(s_theta, s_ref, pairs, 1.0))

    before = loss()
    for _ in range(3):
        trainer.step(_item(), epoch=0, rng=random.Random(0))
    assert loss() < before - 1e-4
    after = dict(trainer.peft.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(not torch.equal(after[k], v) for k, v in adapters.items())
    # the adapters act on the query span only: the passages are still encoded exactly as by the base
    base = _ranker()
    with torch.no_grad():
        trained_prefix = encode_prefix(trainer.model, prompt, trainer.ranker.prefix_context)
        base_prefix = encode_prefix(base.model, prompt)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(trained_prefix, base_prefix))


def test_resume_gives_the_uninterrupted_result(tmp_path):
    items = [_item(), TrainingList("q2", "what is wifi", DOCS, np.array([2.0, 0.0, 0.0, 0.0, 3.0]))]
    straight = PreferenceTrainer(_ranker(), TrainConfig(epochs=2, lr=1e-3))
    straight.train(items, tmp_path / "a", progress=False)
    first = PreferenceTrainer(_ranker(), TrainConfig(epochs=1, lr=1e-3))
    first.train(items, tmp_path / "b", progress=False)  # "interrupted" after epoch 1
    resumed = PreferenceTrainer(_ranker(), TrainConfig(epochs=2, lr=1e-3))
    assert resumed.resume(tmp_path / "b") and resumed.epoch == 1
    resumed.train(items, tmp_path / "b", progress=False)
    a, b = straight.adapter_state(), resumed.adapter_state()
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    assert [h["loss"] for h in straight.history] == pytest.approx([h["loss"] for h in resumed.history])


def test_artifact_round_trip_gives_identical_scores(tmp_path, monkeypatch):
    folder = save_tiny(tmp_path / "base")
    data = tmp_path / "data" / "dl21"
    data.mkdir(parents=True)
    import gzip
    import json

    (data / "queries.jsonl").write_text(json.dumps({"qid": "1", "text": FLEA_QUERY}) + "\n")
    (data / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\td2\t3\n1\td3\t2\n1\td0\t1\n")
    with gzip.open(data / "candidates.bm25top100.jsonl.gz", "wt") as fh:
        for i, t in enumerate(DOCS):
            fh.write(json.dumps({"qid": "1", "query": FLEA_QUERY, "docid": f"d{i}", "rank": i + 1, "text": t}) + "\n")
    ranker = HeadRanker.from_pretrained(folder, heads="0-1,1-0")
    out = train_artifact(
        ranker, TrainConfig(epochs=1, lr=1e-2), tmp_path / "data", ["dl21"], tmp_path / "art", progress=False
    )
    trained = ranker.score(FLEA_QUERY, DOCS)
    loaded = HeadRanker.from_pretrained(out)
    assert loaded.depth == 2 and loaded.heads.heads == ((0, 1), (1, 0))
    assert loaded.score(FLEA_QUERY, DOCS) == pytest.approx(trained, abs=1e-5)
    assert trained != pytest.approx(
        HeadRanker.from_pretrained(folder, heads="0-1,1-0").score(FLEA_QUERY, DOCS), abs=1e-6
    )
    manifest = read_manifest(out)
    assert manifest["data"]["qids"] == ["1"] and manifest["training"]["epochs"] == 1
    assert {p.name for p in out.iterdir()} >= {"headrank.json", "adapter_model.safetensors", "adapter_config.json"}
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    other = save_tiny(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="trained on"):
        load_artifact(out, base_model=str(other))


def test_committed_artifact_is_complete():
    from safetensors import safe_open

    from headrank.artifact import DEFAULT_ARTIFACT

    manifest = read_manifest(DEFAULT_ARTIFACT)
    heads = HeadSet.from_dict({"heads": manifest["heads"]})
    assert manifest["base_model"] == "embedded" and manifest["base_fingerprint"].startswith("gguf-sha256:")
    assert manifest["depth"] == heads.depth and len(heads.heads) == 16
    assert manifest["data"]["datasets"] == ["dl21"]
    with safe_open(DEFAULT_ARTIFACT / "adapter_model.safetensors", "pt") as fh:
        layers = {int(k.split(".layers.")[1].split(".")[0]) for k in fh.keys()}  # noqa: SIM118 (safe_open is not iterable)
    assert layers == set(range(manifest["depth"]))
