"""Head statistics and selection."""

from __future__ import annotations

import numpy as np
import pytest

from headrank.data import Candidate, CandidateList
from headrank.evaluate import per_query
from headrank.heads import (
    HeadStats,
    HeadTable,
    adjacent_pair_accuracy,
    collect_head_table,
    head_stats,
    ndcg_at,
    normalized_entropy,
    select_heads,
    write_stats,
)
from headrank.ranker import HeadRanker

from .conftest import DOCS, FLEA_QUERY


def test_entropy_is_zero_for_one_hot_and_one_for_uniform():
    assert normalized_entropy(np.array([0.0, 1.0, 0.0, 0.0])) == pytest.approx(0.0)
    assert normalized_entropy(np.full(7, 3.0)) == pytest.approx(1.0)
    assert 0 < normalized_entropy(np.array([0.7, 0.2, 0.1])) < 1


def test_ndcg_matches_ir_measures():
    grades = np.array([0.0, 3.0, 1.0, 0.0, 2.0])
    scores = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 5.0, 2.0, 0.0, 4.0]])
    ideal = [3, 2, 1, 1, 0]  # one relevant document is not in the list
    docs = [f"d{i}" for i in range(5)]
    qrels = {"q": {**dict(zip(docs, map(int, grades))), "extra": 1}}
    for row in range(2):
        want = per_query({"q": dict(zip(docs, scores[row]))}, qrels)["q"]
        assert ndcg_at(scores[row : row + 1], grades, ideal)[0] == pytest.approx(want)


def test_adjacent_pairs_only():
    grades = np.array([3.0, 2.0, 0.0])  # adjacent: (0,1) only; (0,2), (1,2) differ by more
    accuracy, count = adjacent_pair_accuracy(np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 5.0]]), grades)
    assert count == 1 and accuracy.tolist() == [1.0, 0.0]


def test_selection_on_a_hand_made_table():
    stats = HeadStats(
        heads=[(0, 0), (0, 1), (1, 0), (1, 1)],
        ndcg=np.array([0.50, 0.60, 0.55, 0.20]),
        pair_accuracy=np.array([0.7, 0.5, 0.6, 0.9]),
        entropy=np.array([0.2, 0.95, 0.3, 0.1]),
    )
    assert select_heads(stats, k=2, lam=0.0).heads == ((0, 1), (1, 0))  # QRHead: NDCG alone
    assert select_heads(stats, k=2, lam=0.5).heads == ((0, 0), (1, 0))  # the diffuse head 0-1 drops out
    assert select_heads(stats, k=1, lam=0.0, measure="pair_accuracy").heads == ((1, 1),)
    with pytest.raises(ValueError, match="k must be"):
        select_heads(stats, k=9)


def test_collect_and_write(lexical, tmp_path):
    ranker = HeadRanker(lexical)
    lst = CandidateList("q", FLEA_QUERY, [Candidate(f"d{i}", t) for i, t in enumerate(DOCS)])
    table = collect_head_table(ranker, [lst], {"q": {"d2": 2, "d4": 1}}, progress=False)
    assert table.calibrated[0].shape == (2, 5)
    assert (table.calibrated[0].argmax(axis=1) == 2).all()  # both lexical heads find the flea passage
    table.save(tmp_path / "t.npz")
    again = HeadTable.load(tmp_path / "t.npz")
    assert np.allclose(again.calibrated[0], table.calibrated[0]) and again.heads == table.heads
    stats = head_stats(again)
    assert (stats.ndcg > 0.6).all()
    write_stats(stats, tmp_path / "out", lam=0.5)
    for name in ("head_stats.csv", "head_stats.json", "heatmap_ndcg.png", "heatmap_entropy.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
