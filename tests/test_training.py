"""Training: pairs, losses, the split, the prefix cache, adapter modes, the loop and its curves, resume, and
trained artifacts."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
import torch

from headrank.artifact import read_manifest, save_artifact
from headrank.data import Candidate, CandidateList, write_candidates
from headrank.engine.scoring import encode_prefixes
from headrank.engine.testing import save_tiny, tiny_backbone
from headrank.evaluation.metrics import middle_zone
from headrank.heads.headset import HeadSet
from headrank.ranker import HeadRanker, RankerConfig
from headrank.training import TrainConfig, train_artifact
from headrank.training.curves import curve_point
from headrank.training.lists import TrainingList, load_training_data, split_queries
from headrank.training.losses import (
    distribution_regularizer,
    listwise_loss,
    preference_loss,
    reference_kl,
    score_scale,
)
from headrank.training.pairs import alps_pairs, random_pairs
from headrank.training.train import calibrate_artifact
from headrank.training.trainer import PreferenceTrainer

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


def test_reference_kl_is_zero_at_the_reference_and_its_value_by_hand_elsewhere():
    s_ref = torch.tensor([1.0, 0.0, -1.0])
    assert float(reference_kl(s_ref.clone(), s_ref)) == pytest.approx(0.0, abs=1e-7)
    assert float(reference_kl(s_ref + 5.0, s_ref)) == pytest.approx(0.0, abs=1e-6)  # a shift moves no share
    s = torch.tensor([0.0, 1.0, -1.0])
    p, q = torch.softmax(s_ref, 0), torch.softmax(s, 0)
    assert float(reference_kl(s, s_ref)) == pytest.approx(float((p * (p / q).log()).sum()), rel=1e-6)
    assert float(reference_kl(2 * s, 2 * s_ref, scale=2.0)) == pytest.approx(float(reference_kl(s, s_ref)), rel=1e-6)
    theta = s.clone().requires_grad_()
    reference_kl(theta, s_ref).backward()
    assert theta.grad[0] < 0 < theta.grad[1]  # the gradient pulls each share back towards the reference


def test_the_kl_term_holds_the_trained_scores_near_the_reference():
    def drift(kl: float) -> float:
        config = TrainConfig(lr=5e-2, gamma=0.0, eta=0.0, kl=kl, max_pairs=50, order="inference")
        trainer = PreferenceTrainer(_ranker(), config)
        for step in range(4):
            trainer.optimizer.zero_grad()
            trainer.list_loss(_item(), 0, random.Random(step))[0].backward()
            trainer.optimizer.step()
        (prompt,) = trainer.prompts(_item(), 0)
        with torch.no_grad():
            s = trainer.ranker.prompt_scores(prompt, trainer.prefix(prompt)).scores
        return float(reference_kl(s, trainer.reference(prompt), score_scale(trainer.reference(prompt), config)))

    assert drift(kl=20.0) < 0.5 * drift(kl=0.0)


def test_lora_dropout_and_weight_decay_reach_the_adapters_and_optimizer():
    trainer = PreferenceTrainer(_ranker(), TrainConfig(lora_dropout=0.3, weight_decay=0.01))
    dropouts = [m for n, m in trainer.adapter.peft.named_modules() if n.endswith("lora_dropout.default")]
    assert dropouts and all(m.p == pytest.approx(0.3) for m in dropouts)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.01)
    trainer.fit(_items(), [_item()], progress=False)
    assert not trainer.adapter.peft.training  # evaluation and what follows the fit run without dropout
    with pytest.raises(ValueError, match="lora_dropout"):
        TrainConfig(lora_dropout=1.0)


def test_patience_stops_after_that_many_curve_points_without_a_validation_gain(tmp_path):
    # a rate too small to move nDCG: step 0 stays the best, so the run stops after 2 more curve points
    config = TrainConfig(epochs=5, lr=1e-9, eval_every=1, patience=2)
    trainer = PreferenceTrainer(_ranker(), config)
    history = trainer.fit(_items(), [_item()], tmp_path, progress=False)
    assert history["best_step"] == 0 and [e["step"] for e in history["evals"]] == [0, 1, 2]
    assert history["stopped_early"] == 2 and trainer.steps_done == 2
    resumed = PreferenceTrainer(_ranker(), config)
    assert resumed.resume(tmp_path) and resumed.fit(_items(), [_item()], progress=False)["evals"] == history["evals"]


def test_listwise_loss_equals_its_value_by_hand():
    s = torch.tensor([1.0, 0.0, 2.0, -1.0])
    grades = np.array([1.0, 0.0, 2.0, 0.0])  # gains 1, 0, 3, 0 -> target 1/4, 0, 3/4, 0
    log_z = np.log(np.exp(1.0) + 1.0 + np.exp(2.0) + np.exp(-1.0))
    by_hand = -(0.25 * (1.0 - log_z) + 0.75 * (2.0 - log_z))
    assert float(listwise_loss(s, grades)) == pytest.approx(by_hand, rel=1e-6)
    assert float(listwise_loss(2 * s, grades, scale=2.0)) == pytest.approx(by_hand, rel=1e-6)
    with pytest.raises(ValueError, match="relevant"):
        listwise_loss(s, np.zeros(4))


def test_preference_loss_is_measured_in_units_of_the_scale():
    s_ref, s = torch.zeros(2), torch.tensor([0.05, 0.0])
    flat = float(preference_loss(s, s_ref, [(0, 1)], beta=1.0))
    scaled = float(preference_loss(s, s_ref, [(0, 1)], beta=1.0, scale=0.05))
    assert flat == pytest.approx(-np.log(1 / (1 + np.exp(-0.05))))  # nearly log 2: no signal
    assert scaled == pytest.approx(-np.log(1 / (1 + np.exp(-1.0))))


def test_validation_split_is_reproducible_disjoint_and_by_query():
    qids = [f"q{i}" for i in range(51)]
    train, held = split_queries(qids, 0.2, seed=0)
    assert split_queries(qids, 0.2, seed=0) == (train, held)
    assert not set(train) & set(held) and set(train) | set(held) == set(qids)
    assert len(held) == 10
    assert split_queries(qids, 0.2, seed=1)[1] != held
    assert split_queries(["a", "b"], 0.2) in ((["a"], ["b"]), (["b"], ["a"]))
    with pytest.raises(ValueError, match="twice"):
        split_queries(["a", "a"], 0.2)


def _ranker(order: str = "forward"):
    return HeadRanker(tiny_backbone(), RankerConfig(heads=HeadSet.of([(0, 1), (1, 0), (2, 3)]), order=order))


def _item():
    return TrainingList("q1", FLEA_QUERY, DOCS, np.array([0.0, 1.0, 3.0, 2.0, 1.0]), [3, 2, 1, 1])


def _items():
    return [_item(), TrainingList("q2", "what is wifi", DOCS, np.array([2.0, 0.0, 0.0, 0.0, 3.0]), [3, 2])]


def _loss_and_grads(trainer: PreferenceTrainer, item: TrainingList):
    trainer.optimizer.zero_grad()
    loss, _ = trainer.list_loss(item, 0, random.Random(0))
    loss.backward()
    # the last layer's o_proj and v_proj feed nothing that is scored (early exit): they get no gradient
    return loss.item(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in trainer.params]


def test_prefix_cache_gives_the_same_loss_and_gradients_as_recomputing():
    for loss_name in ("dpo", "listwise"):
        config = TrainConfig(loss=loss_name, cache_dtype="float32", order="inference")
        cached = PreferenceTrainer(_ranker(), config)
        loss_a, grads_a = _loss_and_grads(cached, _item())
        assert cached.prefixes.computed == 1
        _loss_and_grads(cached, _item())
        assert cached.prefixes.computed == 1  # the second step reuses the prefix
        recomputed = PreferenceTrainer(_ranker(), config)
        recomputed.prefixes = None  # every step runs the passage pass again
        loss_b, grads_b = _loss_and_grads(recomputed, _item())
        assert loss_a == pytest.approx(loss_b, abs=1e-6)
        assert any(bool(g.abs().sum() > 0) for g in grads_a)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_a, grads_b))


def test_half_precision_prefix_keeps_scores_within_tolerance(tmp_path):
    exact = PreferenceTrainer(_ranker(), TrainConfig(cache_dtype="float32"))
    half = PreferenceTrainer(_ranker(), TrainConfig(cache_dtype="float16"), cache_dir=tmp_path)
    prompt = exact.ranker.prompts(FLEA_QUERY, DOCS)[0]
    with torch.no_grad():
        a = exact.ranker.prompt_scores(prompt, exact.prefix(prompt)).scores
        b = half.ranker.prompt_scores(prompt, half.prefix(prompt)).scores
    assert float((a - b).abs().max()) < 1e-2 * float(a.std())
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1  # kept on disk, named by its tokens
    again = PreferenceTrainer(_ranker(), TrainConfig(cache_dtype="float16"), cache_dir=tmp_path)
    again.prefix(prompt)
    assert again.prefixes.computed == 0


def _train_a_little(adapters: str) -> tuple[PreferenceTrainer, object]:
    trainer = PreferenceTrainer(_ranker(), TrainConfig(adapters=adapters, lr=5e-2, gamma=0.0, eta=0.0))
    for step in range(3):
        trainer.optimizer.zero_grad()
        loss, _ = trainer.list_loss(_item(), 0, random.Random(step))
        loss.backward()
        trainer.optimizer.step()
    return trainer, trainer.ranker.prompts(FLEA_QUERY, DOCS)[0]


def test_query_adapters_leave_the_passages_and_all_token_adapters_change_them():
    base = _ranker()
    query, prompt = _train_a_little("query")
    everywhere, _ = _train_a_little("all")
    with torch.no_grad():
        reference = encode_prefixes(base.family, [prompt]).kv
        by_query = query.ranker.encode([prompt]).kv
        by_all = everywhere.ranker.encode([prompt]).kv
    same = [torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(by_query, reference)]
    assert all(same)
    assert not torch.allclose(by_all[-1][0], reference[-1][0], atol=1e-4)
    assert everywhere.prefixes is None and everywhere.ranker.prefix_context is None


def test_one_step_lowers_the_loss_and_changes_only_adapters():
    trainer = PreferenceTrainer(_ranker(), TrainConfig(lr=5e-3, gamma=0.0, eta=0.0, max_pairs=50))
    frozen = {k: v.clone() for k, v in trainer.adapter.peft.named_parameters() if "lora_" not in k}
    adapters = {k: v.clone() for k, v in trainer.adapter.peft.named_parameters() if "lora_" in k}
    assert adapters and all(not v.requires_grad for k, v in trainer.adapter.peft.named_parameters() if "lora_" not in k)
    (prompt,) = trainer.prompts(_item(), epoch=0)
    grades = _item().grades[prompt.order]
    pairs = [(int(p), int(m)) for p, m in zip(*np.nonzero(grades[:, None] - grades[None, :] == 1))]

    def loss() -> float:
        with torch.no_grad():
            s_theta = trainer.ranker.prompt_scores(prompt, trainer.prefix(prompt)).scores
            return float(preference_loss(s_theta, trainer.reference(prompt), pairs, 1.0))

    before = loss()
    for step in range(3):
        trainer.optimizer.zero_grad()
        trainer.list_loss(_item(), 0, random.Random(step))[0].backward()
        trainer.optimizer.step()
    assert loss() < before - 1e-4
    after = dict(trainer.adapter.peft.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(not torch.equal(after[k], v) for k, v in adapters.items())


def test_without_validation_lists_the_last_checkpoint_is_kept():
    trainer = PreferenceTrainer(_ranker(), TrainConfig(epochs=2, lr=1e-2, eval_every=1))
    history = trainer.fit(_items(), [], progress=False)
    assert history["best_step"] == 4 and history["evals"][-1]["validation"]["ndcg@10"] is None
    final = trainer.adapter_state()
    assert all(torch.equal(final[k], trainer.best_state[k]) for k in final)


def test_learning_rate_warms_up_then_decays_to_zero():
    trainer = PreferenceTrainer(_ranker(), TrainConfig(lr=1.0, warmup=0.2))
    rates = [trainer.learning_rate(step, 10) for step in range(10)]
    assert rates[:2] == pytest.approx([0.5, 1.0]) and rates[2] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[2:], rates[3:])) and rates[-1] == pytest.approx(0.125)


def test_accumulated_steps_and_curves_are_recorded(tmp_path):
    config = TrainConfig(epochs=2, lists_per_step=2, eval_every=1, lr=1e-3)
    trainer = PreferenceTrainer(_ranker(), config)
    history = trainer.fit(_items(), [_item()], tmp_path, progress=False)
    assert [h["step"] for h in history["steps"]] == [1, 2] and all(h["lists"] == 2 for h in history["steps"])
    assert [e["step"] for e in history["evals"]] == [0, 1, 2]
    point = history["evals"][0]["validation"]
    assert point == pytest.approx(curve_point(_ranker(), [_item()]))  # step 0 is the untrained ranker
    assert 0 <= point["pair_accuracy"] <= 1 and 0 <= point["ndcg@10"] <= 1
    assert history["best_step"] in (0, 1, 2)


def test_training_raises_validation_pair_accuracy_on_a_planted_signal():
    """Relevant passages hold the word "goldfish" whatever the query: a rule the untrained heads do not know
    and the adapters can learn on training queries, measured on validation queries never trained on."""
    words = ["wifi", "bluetooth", "fleas", "host", "range", "tank", "states", "war", "year", "life", "cycle", "power"]
    rng = random.Random(0)

    def make(qid: str) -> TrainingList:
        texts, grades = [], []
        for i in range(8):
            body = " ".join(rng.choice(words) for _ in range(6))
            relevant = i % 3 == 1
            texts.append(f"{body} goldfish {body}" if relevant else f"{body} {body} {rng.choice(words)}")
            grades.append(1.0 if relevant else 0.0)
        return TrainingList(qid, " ".join(rng.choice(words) for _ in range(3)), texts, np.array(grades), [1, 1])

    train, validation = [make(f"t{i}") for i in range(12)], [make(f"v{i}") for i in range(6)]
    ranker = HeadRanker(tiny_backbone(), RankerConfig(heads=HeadSet.of([(1, 0), (1, 1)]), order="reverse"))
    config = TrainConfig(loss="listwise", epochs=4, lr=1e-2, eval_every=6, gamma=0.0, eta=0.0, order="inference")
    history = PreferenceTrainer(ranker, config).fit(train, validation, progress=False)
    first, best = history["evals"][0]["validation"], max(e["validation"]["pair_accuracy"] for e in history["evals"])
    assert best > first["pair_accuracy"] + 0.2


def test_resume_gives_the_uninterrupted_result(tmp_path):
    config = TrainConfig(epochs=2, lr=1e-3, eval_every=1)
    straight = PreferenceTrainer(_ranker(), config)
    straight.fit(_items(), [_item()], tmp_path / "a", progress=False)
    first = PreferenceTrainer(_ranker(), config)
    first.fit(_items(), [_item()], tmp_path / "b", progress=False, stop_after=2)  # "interrupted" after 2 steps
    resumed = PreferenceTrainer(_ranker(), config)
    assert resumed.resume(tmp_path / "b") and resumed.steps_done == 2
    resumed.fit(_items(), [_item()], tmp_path / "b", progress=False)
    a, b = straight.adapter_state(), resumed.adapter_state()
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-7) for k in a)
    assert [h["loss"] for h in straight.history["steps"]] == pytest.approx(
        [h["loss"] for h in resumed.history["steps"]]
    )
    assert straight.history["best_step"] == resumed.history["best_step"]
    with pytest.raises(ValueError, match=r"belongs to another run \(setting epochs"):
        PreferenceTrainer(_ranker(), TrainConfig(epochs=3, lr=1e-3, eval_every=1)).resume(tmp_path / "b")


def _tiny_dataset(tmp_path, queries: int = 6):
    data = tmp_path / "data" / "dl21"
    data.mkdir(parents=True)
    qrels = ["query-id\tcorpus-id\tscore\n"]
    lists = [
        CandidateList(str(q), FLEA_QUERY, [Candidate(f"d{i}", t) for i, t in enumerate(DOCS)]) for q in range(queries)
    ]
    write_candidates(data / "candidates.bm25top100.jsonl.gz", lists)
    for q in range(queries):
        qrels += [f"{q}\td2\t3\n", f"{q}\td3\t2\n", f"{q}\td{q % 2}\t1\n"]
    (data / "queries.jsonl").write_text(
        "".join(json.dumps({"qid": str(q), "text": FLEA_QUERY}) + "\n" for q in range(queries))
    )
    (data / "qrels.tsv").write_text("".join(qrels))
    return tmp_path / "data"


@pytest.mark.parametrize("adapters", ["query", "all"])
def test_artifact_round_trip_gives_identical_scores(tmp_path, adapters):
    folder = save_tiny(tmp_path / "base")
    ranker = HeadRanker.from_pretrained(folder, heads="0-1,1-0", dtype="float32")
    config = TrainConfig(epochs=2, lr=1e-2, adapters=adapters, eval_every=1)
    out = train_artifact(ranker, config, _tiny_dataset(tmp_path), ["dl21"], tmp_path / "art", progress=False)
    trained = ranker.score(FLEA_QUERY, DOCS)  # the best validation adapter was loaded back before saving
    untrained = HeadRanker.from_pretrained(folder, heads="0-1,1-0", dtype="float32").score(FLEA_QUERY, DOCS)
    assert trained != pytest.approx(untrained, abs=1e-2)  # the adapter moves scores by more than 0.01
    half = HeadRanker.from_pretrained(out, dtype="bfloat16")  # trained in float32, served in bfloat16
    assert half.score(FLEA_QUERY, DOCS) == pytest.approx(trained, abs=2e-3)  # measured: 3e-4, as for the base
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = HeadRanker.from_pretrained(out, dtype="float32")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]  # nothing a user could act on
    assert loaded.depth == 2 and loaded.heads.heads == ((0, 1), (1, 0))
    assert loaded.score(FLEA_QUERY, DOCS) == pytest.approx(trained, abs=1e-5)
    manifest = read_manifest(out)
    assert manifest["adapters"] == adapters
    if adapters == "all":  # merged into the weights: no LoRA module and no adapter switch left at inference
        assert loaded.prefix_context is None
        assert not any("lora_" in name for name, _ in loaded.model.named_parameters())
    else:
        assert loaded.prefix_context is not None
    assert len(manifest["data"]["validation_qids"]) == 1 and len(manifest["data"]["qids"]) == 5
    # the calibrated relevance is fitted on the validation list (DL21: grade >= 2 relevant) and never reorders
    assert loaded.calibration.fitted_on["qids"] == manifest["data"]["validation_qids"]
    ranked = loaded.rank(FLEA_QUERY, DOCS).results
    relevance = [r.calibrated for r in ranked]
    assert relevance == sorted(relevance, reverse=True) and all(0 < p < 1 for p in relevance)
    assert len(set(relevance)) > 1  # it reads the scores, not only the list
    assert not set(manifest["data"]["qids"]) & set(manifest["data"]["validation_qids"])
    assert manifest["training"]["best_step"] == json.loads((out / "history.json").read_text())["best_step"]
    assert (out / "learning_curves.png").stat().st_size > 0
    assert {p.name for p in out.iterdir()} >= {"headrank.json", "adapter_model.safetensors", "adapter_config.json"}
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    other = save_tiny(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="trained on"):
        HeadRanker.from_artifact(out, base_model=str(other))


def test_training_lists_carry_their_datasets_relevant_grade(tmp_path):
    data = load_training_data(["dl21"], _tiny_dataset(tmp_path), 20, 0.2)
    assert {item.relevant_grade for item in data.train + data.validation} == {2}  # TREC DL: grade 2 and up


def test_no_calibration_is_written_when_the_validation_lists_hold_nothing_relevant(tmp_path):
    folder = save_tiny(tmp_path / "base")
    ranker = HeadRanker.from_pretrained(folder, heads="0-1,1-0", dtype="float32")
    out = save_artifact(tmp_path / "art", ranker.recipe(), None, {}, {})
    grades = np.ones(len(DOCS))  # grade 1 only: below DL's relevant grade 2
    items = [TrainingList("q", FLEA_QUERY, list(DOCS), grades, [1] * len(DOCS), relevant_grade=2)]
    assert calibrate_artifact(out, items, "float32", "cpu") is None
    assert not (out / "calibration.json").exists()
    items[0].grades = np.arange(len(DOCS)) % 3.0
    assert calibrate_artifact(out, items, "float32", "cpu") is not None
    assert HeadRanker.from_artifact(out, dtype="float32").calibration is not None


def test_no_adapter_is_shipped_when_validation_prefers_the_untrained_heads(tmp_path):
    folder = save_tiny(tmp_path / "base")
    ranker = HeadRanker.from_pretrained(folder, heads="0-1,1-0", dtype="float32")
    config = TrainConfig(epochs=2, lr=1e-12, eval_every=1)  # no step can move validation: step 0 stays best
    out = train_artifact(ranker, config, _tiny_dataset(tmp_path), ["dl21"], tmp_path / "art", progress=False)
    manifest = read_manifest(out)
    assert manifest["training"]["best_step"] == 0 and manifest["training"]["steps"] > 0
    assert manifest["adapters"] == "none" and not list(out.glob("adapter*"))
    loaded = HeadRanker.from_pretrained(out, dtype="float32")
    assert loaded.prefix_context is None and loaded.artifact["adapters"] == "none"
    untrained = HeadRanker.from_pretrained(folder, heads="0-1,1-0", dtype="float32")
    assert loaded.score(FLEA_QUERY, DOCS) == untrained.score(FLEA_QUERY, DOCS)
    windowed = HeadRanker.from_pretrained(out, dtype="float32", max_length=150)  # the caller's windows
    assert len(windowed.prompts(FLEA_QUERY, DOCS)) > 1 and len(loaded.prompts(FLEA_QUERY, DOCS)) == 1


def test_committed_artifacts_are_complete():
    from safetensors import safe_open

    from headrank.artifact import DEFAULT_ARTIFACT, PREVIOUS_ARTIFACT, UNTRAINED_ARTIFACT

    datasets = {DEFAULT_ARTIFACT: ["dl21", "scifact-train"], UNTRAINED_ARTIFACT: ["dl21"], PREVIOUS_ARTIFACT: ["dl21"]}
    for folder, trained_on in datasets.items():
        manifest = read_manifest(folder)
        heads = HeadSet.from_dict({"heads": manifest["heads"]})
        assert manifest["base_model"] == "embedded" and manifest["base_fingerprint"].startswith("gguf-sha256:")
        assert manifest["depth"] == heads.depth and len(heads.heads) == 16
        assert manifest["data"]["datasets"] == trained_on
    assert read_manifest(UNTRAINED_ARTIFACT)["adapters"] == "none" and not list(UNTRAINED_ARTIFACT.glob("adapter*"))
    assert read_manifest(DEFAULT_ARTIFACT)["heads"] == read_manifest(UNTRAINED_ARTIFACT)["heads"]
    assert read_manifest(DEFAULT_ARTIFACT)["depth"] == 15
    for folder in (DEFAULT_ARTIFACT, PREVIOUS_ARTIFACT):  # adapters on every layer that runs, none beyond
        with safe_open(folder / "adapter_model.safetensors", "pt") as fh:
            layers = {int(k.split(".layers.")[1].split(".")[0]) for k in fh.keys()}  # noqa: SIM118 (safe_open is not iterable)
        assert layers == set(range(read_manifest(folder)["depth"]))


def _checkpointed(tmp_path, identity=None) -> PreferenceTrainer:
    trainer = PreferenceTrainer(_ranker(), TrainConfig(epochs=1, eval_every=1, lr=1e-3), identity=identity)
    trainer.fit(_items()[:1], [_item()], tmp_path, progress=False)
    return trainer


def test_resume_survives_every_state_an_interrupted_save_can_leave(tmp_path):
    import shutil

    _checkpointed(tmp_path)
    last, old, partial = tmp_path / "last", tmp_path / "last.old", tmp_path / "last.partial"

    def steps_after_resume() -> int:
        fresh = PreferenceTrainer(_ranker(), TrainConfig(epochs=1, eval_every=1, lr=1e-3))
        assert fresh.resume(tmp_path)
        return fresh.steps_done

    # killed while writing the new checkpoint: the old one is whole
    partial.mkdir()
    (partial / "adapter.safetensors").write_bytes(b"half")
    assert steps_after_resume() == 1
    # killed between the two renames: the previous one moved aside, the new one whole but not in place
    shutil.rmtree(partial)
    shutil.copytree(last, partial)
    state = json.loads((partial / "trainer_state.json").read_text())
    (partial / "trainer_state.json").write_text(json.dumps({**state, "steps_done": 7}))
    last.rename(old)
    assert steps_after_resume() == 7 and last.is_dir() and not old.exists() and not partial.exists()
    # killed before the previous one was removed
    shutil.copytree(last, old)
    assert steps_after_resume() == 7 and not old.exists()
    # nothing whole at all
    shutil.rmtree(last)
    assert not PreferenceTrainer(_ranker(), TrainConfig(epochs=1, eval_every=1, lr=1e-3)).resume(tmp_path)


def test_resume_refuses_a_checkpoint_of_other_data_and_says_what_differs(tmp_path):
    _checkpointed(tmp_path, identity={"datasets": ["dl21"], "limit": None, "heads": ["0-1"]})
    other = PreferenceTrainer(
        _ranker(), TrainConfig(epochs=1, eval_every=1, lr=1e-3), identity={"datasets": ["dl21", "scifact-train"]}
    )
    with pytest.raises(ValueError, match=r"run datasets: \["):
        other.resume(tmp_path)
    changed = PreferenceTrainer(_ranker(), TrainConfig(epochs=1, eval_every=1, lr=2e-3), identity={})
    with pytest.raises(ValueError, match="setting lr: 0.001 -> 0.002"):
        changed.resume(tmp_path)


def test_curve_points_of_every_token_adapters_batch_lists_as_one_prompt_per_pass_does():
    """Every-token adapters store no passage passes: a curve point that batches several lists in one pass (a GPU's
    default budget) must encode them, as one prompt per pass does (it stacked a batch of Nones on the GPU)."""
    points = []
    for budget in (1, 100_000):
        ranker = HeadRanker(
            tiny_backbone(), RankerConfig(heads=HeadSet.of([(0, 1), (1, 0), (2, 3)]), max_batch_tokens=budget)
        )
        trainer = PreferenceTrainer(ranker, TrainConfig(adapters="all"))
        assert len(ranker.batches([p for item in _items() for p in ranker.prompts(item.query, item.texts)])) == (
            2 if budget == 1 else 1
        )
        points.append(trainer.evaluate(_items(), _items())["validation"])
    assert points[0]["ndcg@10"] == pytest.approx(points[1]["ndcg@10"], abs=1e-6)
    assert points[0]["pair_accuracy"] == points[1]["pair_accuracy"]


def test_every_loss_is_one_row_of_the_objectives_table():
    """The trainer looks losses up by name and never branches on one; an unknown name is a clear error."""
    import inspect

    from headrank.training import trainer as trainer_module
    from headrank.training.objectives import OBJECTIVES, objective

    assert set(OBJECTIVES) == {"dpo", "listwise"} and '"dpo"' not in inspect.getsource(trainer_module)
    with pytest.raises(ValueError, match="loss must be one of \\('dpo', 'listwise'\\)"):
        PreferenceTrainer(_ranker(), TrainConfig(loss="hinge"))
    grades = _item().grades
    s_ref = torch.tensor([0.1, 0.4, 0.9, 0.7, 0.3])
    s = s_ref + torch.tensor([0.0, 0.1, -0.1, 0.2, 0.0])
    sharp = TrainConfig(beta=2.0)  # listwise: beta divides the temperature
    loss, plus, minus = objective("listwise").loss(s, s_ref, grades, torch.tensor(1.0), sharp, None)
    assert float(loss) == pytest.approx(float(listwise_loss(s, grades, scale=0.5)))
    assert sorted(zip(plus, minus)) == [(1, 0), (2, 3), (3, 1), (3, 4), (4, 0)]  # grades 0 1 3 2 1: apart by one
    assert objective("listwise").loss(s, s_ref, np.zeros(5), torch.tensor(1.0), TrainConfig(), None) is None
