"""The calibrated relevance: fitted on labelled lists, monotone in the score, stored beside an artifact, and what
`RankedDocument.relevance` and the three HTTP shapes answer (the list-relative one stays reachable)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headrank.artifact import save_artifact
from headrank.calibration import FEATURES, WITHIN, Calibration, ListEvidence, fit_calibration, load_calibration
from headrank.engine.testing import DOCS, FLEA_QUERY, save_tiny
from headrank.ranker import HeadRanker, RankerConfig
from headrank.results import relevance_scores


def synthetic_lists(count: int, seed: int, truth: list | None = None) -> list[tuple[ListEvidence, np.ndarray]]:
    """Lists whose relevance depends on both the score and the list's raw attention share, as a known logistic
    (its probabilities appended to `truth`): a list with a low share holds little that is relevant."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(5, 30))
        share = float(rng.uniform(0.2, 0.8))
        scores = rng.normal(0, 1, n)
        p = 1 / (1 + np.exp(-(2.0 * scores + 10 * (share - 0.5))))
        if truth is not None:
            truth.append(p)
        out.append((ListEvidence(scores.tolist(), share, share / 2), (rng.random(n) < p).astype(float)))
    return out


def test_the_fit_is_calibrated_where_the_list_relative_score_is_not():
    truth: list = []
    train, test = synthetic_lists(300, 0), synthetic_lists(200, 1, truth)
    fitted = fit_calibration(train)
    assert all(c >= 0 for name, c in zip(FEATURES, fitted.coefficients) if name in WITHIN)
    y = np.concatenate([labels for _, labels in test])
    calibrated = np.concatenate([fitted.relevance(e) for e, _ in test])
    listwise = np.concatenate([relevance_scores(e.scores) for e, _ in test])
    assert np.mean((calibrated - y) ** 2) < 0.8 * np.mean((listwise - y) ** 2)
    p = np.concatenate(truth)
    assert np.abs(calibrated - p).mean() < 0.03 < 0.1 < np.abs(listwise - p).mean()


def test_the_relevance_never_reorders_a_list():
    fitted = fit_calibration(synthetic_lists(100, 2))
    evidence = ListEvidence([0.3, -1.0, 2.5, 0.3, 1.1], 0.5, 0.2)
    relevance = fitted.relevance(evidence)
    order = sorted(range(5), key=lambda i: -evidence.scores[i])
    assert [relevance[i] for i in order] == sorted(relevance, reverse=True)
    assert relevance[0] == relevance[3]  # equal scores, equal relevance


def test_a_fit_needs_both_labels_and_a_stored_calibration_its_features(tmp_path):
    with pytest.raises(ValueError, match="all equal"):
        fit_calibration([(ListEvidence([1.0, 2.0], 0.5, 0.1), [0, 0])])
    fitted = fit_calibration(synthetic_lists(50, 3), fitted_on={"lists": 50})
    fitted.save(tmp_path)
    assert load_calibration(tmp_path) == fitted
    stored = json.loads((tmp_path / "calibration.json").read_text())
    with pytest.raises(ValueError, match="features"):
        Calibration.from_dict({**stored, "features": ["score"]})


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> HeadRanker:
    """A tiny artifact with a calibration.json, loaded back by `from_artifact`."""
    folder = tmp_path_factory.mktemp("tiny")
    base = HeadRanker.from_pretrained(save_tiny(folder / "base"), heads="0-1,1-0,1-3", dtype="float32")
    out = save_artifact(folder / "artifact", base.recipe(), None, training={}, data={})
    fit_calibration(synthetic_lists(100, 4)).save(out)
    return HeadRanker.from_artifact(out, dtype="float32")


def test_the_raw_share_is_the_query_span_attention_on_the_passages(calibrated):
    prompt = calibrated.prompts(FLEA_QUERY, DOCS)[0]
    scores = calibrated.score_many([prompt])[0]
    evidence = ListEvidence.from_passes(scores.scores.tolist(), [(prompt.order, scores)], [1.0, 1.0, 1.0])
    attention = calibrated.token_attention([prompt])[0].double()  # [query/N/A, heads, tokens]
    inside = [t for start, end in prompt.passage_spans for t in range(start, end)]
    assert evidence.raw_share == pytest.approx(attention[0][:, inside].sum(dim=1).mean().item(), rel=1e-4)
    assert evidence.na_share == pytest.approx(attention[1][:, inside].sum(dim=1).mean().item(), rel=1e-4)
    assert 0 < evidence.raw_share < 1


def test_ranked_documents_carry_the_calibrated_and_the_list_relative_relevance(calibrated):
    assert calibrated.calibration is not None
    ranked = calibrated.rank(FLEA_QUERY, DOCS)
    scores = calibrated.score(FLEA_QUERY, DOCS)
    evidence = ListEvidence.from_passes(scores, calibrated.score_lists(FLEA_QUERY, DOCS), [1.0] * 3)
    expected = calibrated.calibration.relevance(evidence)
    assert [r.calibrated for r in ranked] == pytest.approx([expected[r.index] for r in ranked])
    assert [r.relevance for r in ranked] == pytest.approx([relevance_scores(scores)[r.index] for r in ranked])
    assert [r.calibrated for r in ranked] == sorted((r.calibrated for r in ranked), reverse=True)
    assert [r.calibrated for r in ranked] != pytest.approx([r.relevance for r in ranked])
    batched = calibrated.rank_batch([(FLEA_QUERY, DOCS)], progress=False)[0]
    assert [r.calibrated for r in batched] == pytest.approx([r.calibrated for r in ranked], abs=1e-6)
    plain = HeadRanker(calibrated.backbone, RankerConfig(heads=calibrated.heads)).rank(FLEA_QUERY, DOCS)
    assert all(r.calibrated is None for r in plain)  # no calibration, no P(relevant)


def test_every_http_shape_answers_the_calibrated_relevance_when_asked(calibrated):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from headrank.serve.app import ServeConfig, create_app

    from .conftest import served

    by_index = {r.index: r for r in calibrated.rank(FLEA_QUERY, DOCS)}
    with served(create_app(calibrated, ServeConfig(model_name="tiny"))) as client:
        for path, body, key in (
            ("/v1/rerank", {"query": FLEA_QUERY, "documents": DOCS}, "results"),
            ("/v2/rerank", {"query": FLEA_QUERY, "documents": DOCS}, "results"),
            ("/rerank", {"query": FLEA_QUERY, "texts": DOCS}, None),
        ):
            for kind, attribute in ((None, "relevance"), ("list", "relevance"), ("calibrated", "calibrated")):
                sent = body if kind is None else {**body, "relevance": kind}
                answer = client.post(path, json=sent)
                assert answer.status_code == 200, answer.text
                results = answer.json()[key] if key else answer.json()
                value = "relevance_score" if key else "score"
                got = {r["index"]: r[value] for r in results}
                assert got == pytest.approx({i: getattr(r, attribute) for i, r in by_index.items()}, abs=1e-5)
        refused = client.post("/v1/rerank", json={"query": FLEA_QUERY, "documents": DOCS, "relevance": "global"})
        assert refused.status_code == 422
    plain = HeadRanker(calibrated.backbone, RankerConfig(heads=calibrated.heads))
    with served(create_app(plain, ServeConfig(model_name="plain"))) as client:
        answer = client.post("/rerank", json={"query": FLEA_QUERY, "texts": DOCS, "relevance": "calibrated"})
        expected = {r.index: r.relevance for r in plain.rank(FLEA_QUERY, DOCS)}  # no calibration: list-relative
        assert {r["index"]: r["score"] for r in answer.json()} == pytest.approx(expected, abs=1e-5)
        assert client.get("/health").json()["ranker"]["calibrated"] is False


def test_a_feature_constant_in_training_is_left_out():
    """Lists all of 20 in training say nothing about length: a list of 3 is not pushed to 0 or 1 by it."""
    rng = np.random.default_rng(5)
    lists = [(ListEvidence(rng.normal(0, 1, 20).tolist(), 0.5, 0.2), rng.random(20) < 0.3) for _ in range(40)]
    fitted = fit_calibration(lists)
    assert fitted.coefficients[FEATURES.index("log_count")] == 0.0
    short = fitted.relevance(ListEvidence([0.1, -0.2, 0.3], 0.5, 0.2))
    assert all(0.05 < p < 0.7 for p in short)
