"""Head statistics and selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headrank.data import Candidate, CandidateList
from headrank.engine.testing import tiny_backbone
from headrank.evaluation.metrics import per_query
from headrank.heads.headset import HeadSet
from headrank.heads.selection import (
    HeadStats,
    HeadTable,
    adjacent_pair_accuracy,
    collect_head_table,
    head_stats,
    merge_tables,
    ndcg_at,
    normalized_entropy,
    select_heads,
    within_depth,
    write_stats,
)
from headrank.ranker import HeadRanker, RankerConfig

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


def _stats_over_layers() -> HeadStats:
    """Three layers of two heads; the best heads sit deep."""
    return HeadStats(
        heads=[(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)],
        ndcg=np.array([0.40, 0.45, 0.50, 0.30, 0.70, 0.65]),
        pair_accuracy=np.full(6, 0.5),
        entropy=np.full(6, 0.5),
    )


def test_a_depth_budget_keeps_the_best_heads_within_it():
    stats = _stats_over_layers()
    assert select_heads(stats, k=2, lam=0.0).heads == ((2, 0), (2, 1))  # no budget: 3 layers run
    within = select_heads(stats, k=2, lam=0.0, max_depth=2)
    assert within.heads == ((0, 1), (1, 0)) and within.depth == 2
    assert select_heads(stats, k=2, lam=0.0, max_depth=3) == select_heads(stats, k=2, lam=0.0)
    with pytest.raises(ValueError, match="within the first 1 layers"):
        select_heads(stats, k=3, lam=0.0, max_depth=1)
    with pytest.raises(ValueError, match="max_depth must be at least 1"):
        select_heads(stats, k=1, max_depth=0)


def _table(sources: list[str], rows: list[list[float]], grades: list[list[float]]) -> HeadTable:
    """One head; each query's calibrated row and grades by hand (raw = calibrated)."""
    cal = [np.asarray([r], dtype=np.float32) for r in rows]
    g = [np.asarray(x) for x in grades]
    return HeadTable([(0, 0)], [f"q{i}" for i in range(len(rows))], cal, cal, g, [list(x) for x in grades], sources)


def test_every_source_weighs_the_same_in_head_statistics(tmp_path):
    right, wrong = [2.0, 1.0], [1.0, 2.0]  # one relevant passage first: nDCG 1, else 1/log2(3)
    table = _table(["big", "big", "big", "small"], [right, right, right, wrong], [[1, 0]] * 4)
    low = 1 / np.log2(3)
    assert head_stats(table).ndcg[0] == pytest.approx((1.0 + low) / 2)  # not (3 + low) / 4
    table.save(tmp_path / "t.npz")
    again = HeadTable.load(tmp_path / "t.npz")
    assert again.sources == table.sources
    assert head_stats(again.subset(["q0", "q1"])).ndcg[0] == pytest.approx(1.0)
    merged = merge_tables([table.subset(["q3"]), table.subset(["q0"])])
    assert merged.qids == ["q3", "q0"] and merged.sources == ["small", "big"]


def test_a_head_sets_table_ndcg_is_the_rankers():
    """Summing head rows of the full-depth table ranks as a ranker built with only those heads, cut after the
    deepest one: what lets every depth budget be scored from one table."""
    qrels = {"q": {"d2": 2, "d4": 1, "d0": 1}}
    lst = CandidateList("q", FLEA_QUERY, [Candidate(f"d{i}", t) for i, t in enumerate(DOCS)])
    table = collect_head_table(HeadRanker(tiny_backbone()), [lst], qrels, progress=False)
    seen = set()
    for heads in ("0-1", "2-3", "1-0,3-2", "0-0,0-3,1-1"):
        subset = HeadRanker(tiny_backbone(), RankerConfig(heads=HeadSet.parse(heads)))
        assert subset.layer_calls() == HeadSet.parse(heads).depth
        scores = np.asarray(subset.score(FLEA_QUERY, DOCS))
        want = ndcg_at(scores[None, :], table.grades[0], table.ideal[0])[0]
        assert table.set_ndcg(HeadSet.parse(heads))[0] == pytest.approx(want)
        seen.add(round(float(want), 6))
    assert len(seen) > 1  # the head sets rank differently: the equality is not between constants


def test_select_heads_with_a_depth_budget_runs_only_that_many_layers(tmp_path, capsys):
    """--max-depth 2 on a 4-layer model: the head table is collected by running layers 0 and 1 alone (counted by
    a hook on every decoder layer that starts: the last layer run exits early, before its forward returns), and
    a selection beyond the budget cannot reuse that table."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    from headrank.cli import main
    from headrank.engine.testing import save_tiny

    from .tiny_data import write_data_dir

    model = save_tiny(tmp_path / "tiny", num_layers=4)
    data = write_data_dir(tmp_path / "data")
    ran: list[int] = []

    def count(module, args):
        if isinstance(module, Qwen3DecoderLayer):
            ran.append(module.self_attn.layer_idx)

    argv = ["select-heads", "--model", str(model), "--data-dir", str(data), "--k", "3", "--quiet"]
    out = tmp_path / "d2"
    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        assert main([*argv, "--max-depth", "2", "--out", str(out)]) == 0
    finally:
        handle.remove()
    assert set(ran) == {0, 1} and ran.count(0) == ran.count(1) > 0
    table = HeadTable.load(out / "head_table.npz")
    assert table.max_depth == 2 and {layer for layer, _ in table.heads} == {0, 1} and len(table.heads) == 8
    assert {h["layer"] for h in json.loads((out / "heads.json").read_text())["heads"]} <= {0, 1}
    assert main([*argv, "--max-depth", "1", "--lam", "0", "--reuse", "--out", str(out)]) == 0  # within the table
    assert {h["layer"] for h in json.loads((out / "heads.json").read_text())["heads"]} == {0}
    capsys.readouterr()
    for deeper in (["--max-depth", "3"], []):
        assert main([*argv, *deeper, "--reuse", "--out", str(out)]) == 2
        assert "holds only the first 2 layers" in capsys.readouterr().err


def test_a_depth_budget_at_or_past_the_models_depth_keeps_every_head(tiny):
    ranker = HeadRanker(tiny)
    assert within_depth(ranker, None) is ranker and within_depth(ranker, 4) is ranker
    cut = within_depth(ranker, 3)
    assert cut.layer_calls() == 3 and cut.heads.heads == tuple((la, h) for la in range(3) for h in range(4))
    with pytest.raises(ValueError, match="max_depth must be at least 1"):
        within_depth(ranker, 0)
