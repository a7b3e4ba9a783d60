"""Paired comparison: wins/losses/ties, the sign-flip test's exact and sampled p, and clear refusals."""

from __future__ import annotations

import json

import pytest

from headrank.cli import main
from headrank.data import write_run
from headrank.evaluation.significance import compare_runs, randomization_p

QRELS = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
RELEVANT_LAST = {"q1": {"x": 3, "y": 2, "a": 1}, "q2": {"x": 3, "y": 2, "b": 1}, "q3": {"x": 3, "y": 2, "c": 1}}
RELEVANT_FIRST = {"q1": {"a": 3, "y": 2, "x": 1}, "q2": {"b": 3, "y": 2, "x": 1}, "q3": {"x": 3, "y": 2, "c": 1}}


def test_exact_p_of_six_equal_gains_is_two_sign_patterns_in_64():
    assert randomization_p([0.1] * 6) == pytest.approx(2 / 64)
    assert randomization_p([0.0] * 6) == 1.0
    assert randomization_p([0.1, -0.1]) == 1.0  # every pattern is as extreme as mean 0


def test_sampled_p_is_tiny_for_a_consistent_gain_over_many_queries():
    p = randomization_p([0.05] * 40, trials=20_000)
    assert p == pytest.approx(1 / 20_001)
    mixed = randomization_p([0.05, -0.05] * 20, trials=20_000)
    assert mixed == 1.0


def test_compare_counts_wins_ties_and_the_delta_by_hand():
    (row,) = compare_runs(RELEVANT_LAST, {"first": RELEVANT_FIRST}, QRELS)
    # q1, q2: relevant moves from rank 3 (nDCG 1/log2(4) = 0.5) to rank 1 (1.0); q3 is unchanged
    assert (row.wins, row.losses, row.ties, row.queries) == (2, 0, 1, 3)
    assert row.delta == pytest.approx(1.0 / 3)
    assert row.baseline_mean == pytest.approx(0.5)


def test_a_subset_of_queries_can_be_compared():
    (row,) = compare_runs(RELEVANT_LAST, {"first": RELEVANT_FIRST}, QRELS, qids=["q1", "q3"])
    assert (row.wins, row.ties, row.queries) == (1, 1, 2)
    with pytest.raises(ValueError, match="relevance judgements"):
        compare_runs(RELEVANT_LAST, {"first": RELEVANT_FIRST}, QRELS, qids=["nope"])


def test_runs_of_different_queries_are_refused():
    partial = {q: docs for q, docs in RELEVANT_FIRST.items() if q != "q3"}
    with pytest.raises(ValueError, match="same queries"):
        compare_runs(RELEVANT_LAST, {"partial": partial}, QRELS)


def test_cli_compare_reads_eval_folders_and_run_files(tmp_path, capsys):
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, r in QRELS.items() for d in r))
    (tmp_path / "base").mkdir()
    for path, run in ((tmp_path / "base" / "run.trec", RELEVANT_LAST), (tmp_path / "sys.trec", RELEVANT_FIRST)):
        write_run(path, {q: sorted(d.items(), key=lambda x: -x[1]) for q, d in run.items()})
    out = tmp_path / "cmp.json"
    assert (
        main(["compare", str(tmp_path / "base"), str(tmp_path / "sys.trec"), "--qrels", str(qrels), "--out", str(out)])
        == 0
    )
    assert json.loads(out.read_text())["rows"][0]["wins"] == 2
    assert "0.5000" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "missing"), str(tmp_path / "sys.trec"), "--qrels", str(qrels)]) == 2
    assert "no TREC run" in capsys.readouterr().err
