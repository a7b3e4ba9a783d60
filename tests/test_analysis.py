"""Middle-zone selectivity on hand-made scores."""

from __future__ import annotations

import json

import pytest

from headrank.cli import main
from headrank.data import DataError
from headrank.evaluation.analysis import plot_positions, zone_report


def _eval_dir(tmp_path, scores: list[float], order: str = "forward"):
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"method": "m", "order": order}))
    rows = [{"qid": "q", "docid": f"d{i}", "first_stage_rank": i + 1, "score": s} for i, s in enumerate(scores)]
    (folder / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_selectivity_gap_by_hand(tmp_path):
    # 8 passages in forward order: middle zone = positions 2..5; top quartile = best 2
    scores = [0.0, 0.1, 0.9, 0.2, 0.8, 0.3, 0.4, 0.5]
    qrels = {"q": {"d2": 2, "d3": 2, "d4": 0, "d5": 0}}
    report = zone_report(_eval_dir(tmp_path, scores), qrels, relevant_grade=2)
    # relevant in the middle: d2 (top), d3 (not) -> 1/2; irrelevant in the middle: d4 (top), d5 (not) -> 1/2
    assert report.top_quartile_relevant_middle == pytest.approx(0.5)
    assert report.top_quartile_irrelevant_middle == pytest.approx(0.5)
    assert report.selectivity_gap == pytest.approx(0.0)
    assert report.middle_variance_raw == pytest.approx(float(__import__("numpy").var([0.9, 0.2, 0.8, 0.3])))
    assert len(report.by_position_relevant) == 8
    # pairs kept in first-stage order, by hand: 0.9 beats the 5 after it, 0.8 the 3 after it -> 8 of 28
    assert report.first_stage_tau == pytest.approx((8 - 20) / 28)
    plot_positions([report, report], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_reverse_order_maps_positions(tmp_path):
    # reverse: first-stage rank 1 sits last in the prompt; with 4 passages the middle is positions 1, 2
    report = zone_report(_eval_dir(tmp_path, [0.5, 0.1, 0.9, 0.2], order="reverse"), {"q": {"d1": 2}}, 2)
    # d1 (first-stage index 1) sits at input position 2: in the middle, not in the top quartile (best 1);
    # d2 sits at position 1, in the middle, irrelevant, and is the best
    assert report.top_quartile_relevant_middle == 0.0
    assert report.top_quartile_irrelevant_middle == pytest.approx(1.0)
    assert report.by_position_relevant[2] < 0 and report.by_position_irrelevant[1] > 1
    assert report.selectivity_gap == pytest.approx(-1.0)


def test_missing_scores_are_explained(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(DataError, match="headrank eval"):
        zone_report(tmp_path, {}, 2)
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq\td\t1\n")
    assert main(["analyze", str(tmp_path), "--qrels", str(qrels), "--out", str(tmp_path / "zone")]) == 2
    assert "headrank eval" in capsys.readouterr().err


def test_runs_of_the_same_method_are_labelled_by_folder(tmp_path):
    first = _eval_dir(tmp_path, [0.5, 0.1, 0.9, 0.2])
    second = first.rename(tmp_path / "other")
    _eval_dir(tmp_path, [0.1, 0.2, 0.3, 0.4])
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq\td1\t2\n")
    assert main(["analyze", str(first), str(second), "--qrels", str(qrels), "--out", str(tmp_path / "z")]) == 0
    labels = [r["label"] for r in json.loads((tmp_path / "z" / "middle_zone.json").read_text())]
    assert labels == [str(first), str(second)]
