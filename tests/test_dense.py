"""The dense baseline: the embedded MiniLM ranks by meaning, offline, through the shared result types."""

from __future__ import annotations

import pytest

from headrank.results import ranked_by_scores

from .conftest import DOCS, FLEA_QUERY


def test_ranked_by_scores_is_tie_stable_and_checks_ids():
    ranked = ranked_by_scores("q", ["a", "b", "c"], [1.0, 2.0, 1.0], doc_ids=["x", "y", "z"])
    assert [r.doc_id for r in ranked] == ["y", "x", "z"] and [r.rank for r in ranked] == [1, 2, 3]
    with pytest.raises(ValueError, match="doc_ids"):
        ranked_by_scores("q", ["a"], [1.0], doc_ids=["x", "y"])


def test_embedded_minilm_ranks_the_answer_first_wherever_it_stands():
    pytest.importorskip("sentence_transformers")
    from headrank.baselines.dense import DenseReranker

    ranker = DenseReranker.from_pretrained()
    for docs in (DOCS, DOCS[::-1]):
        top = ranker.rank(FLEA_QUERY, docs, doc_ids=[d[:5] for d in docs])[0]
        assert top.document == "fleas live up to a year on the host" and top.doc_id == "fleas"
    scores = ranker.score(FLEA_QUERY, DOCS)
    assert len(scores) == len(DOCS) and all(-1.0 <= s <= 1.0 for s in scores)
    assert ranker.score(FLEA_QUERY, []) == []
    with pytest.raises(ValueError, match="empty"):
        ranker.rank("  ", DOCS)
