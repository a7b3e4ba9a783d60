"""The PyTerrier transformer: composes with >> and %, keeps the unreranked rows below, and pt.Experiment reports
the nDCG@10 that `headrank eval` reports on the same lists."""

from __future__ import annotations

import json

import pytest
from ir_measures import nDCG

pt = pytest.importorskip("pyterrier")
pd = pytest.importorskip("pandas")  # pyterrier brings it

from headrank.cli import main  # noqa: E402
from headrank.data import Candidate, CandidateList, write_candidates  # noqa: E402
from headrank.engine.testing import save_tiny  # noqa: E402
from headrank.pyterrier import HeadRankReranker, qrels_frame, result_frame  # noqa: E402
from headrank.ranker import HeadRanker  # noqa: E402

from .conftest import DOCS  # noqa: E402

QUERIES = {"1": "how long do fleas live", "2": "what is wifi", "3": "goldfish tank", "4": "cats"}
QRELS = {"1": {"d0": 3, "d2": 1}, "2": {"d1": 2}, "3": {"d3": 1, "d4": 2}, "4": {"d4": 1}}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny")


def _lists() -> list[CandidateList]:
    """Each query's first stage: the passages in a different rotation (d0..d4 are DOCS' ids)."""
    out = []
    for n, (qid, query) in enumerate(QUERIES.items()):
        order = [(i + n) % len(DOCS) for i in range(len(DOCS))]
        out.append(
            CandidateList(qid, query, [Candidate(f"d{i}", DOCS[i], score=10.0 - r) for r, i in enumerate(order)])
        )
    return out


def _data_dir(tmp_path):
    folder = tmp_path / "data" / "dl19"
    folder.mkdir(parents=True)
    (folder / "queries.jsonl").write_text("".join(json.dumps({"qid": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    rows = "".join(f"{q}\t{d}\t{g}\n" for q, judged in QRELS.items() for d, g in judged.items())
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    write_candidates(folder / "candidates.bm25top100.jsonl.gz", _lists())
    return tmp_path / "data"


def test_pt_experiment_reports_the_ndcg_of_headrank_eval(tiny_folder, tmp_path):
    data = _data_dir(tmp_path)
    out = tmp_path / "eval"
    argv = ["eval", "--data-dir", str(data), "--dataset", "dl19", "--method", "selected", "--heads", "1-0,2-3"]
    assert main([*argv, "--model", str(tiny_folder), "--top-k", "3", "--out", str(out), "--quiet"]) == 0
    expected = json.loads((out / "metrics.json").read_text())["ndcg@10"]

    ranker = HeadRanker.from_pretrained(tiny_folder, heads="1-0,2-3")
    first_stage = pt.Transformer.from_df(result_frame(_lists()))
    topics = result_frame(_lists())[["qid", "query"]].drop_duplicates()
    table = pt.Experiment(
        [first_stage, first_stage >> HeadRankReranker(ranker, top_k=3)],
        topics,
        qrels_frame(QRELS),
        eval_metrics=[nDCG @ 10],
        names=["bm25", "headrank"],
    )
    ndcg = dict(zip(table["name"], table["nDCG@10"]))
    assert ndcg["headrank"] == pytest.approx(expected, abs=1e-9)
    assert ndcg["headrank"] != pytest.approx(ndcg["bm25"])  # the reranker changed the rankings


def test_rows_beyond_top_k_stay_below_in_first_stage_order_and_cutoff_composes(tiny_folder):
    ranker = HeadRanker.from_pretrained(tiny_folder, heads="1-0,2-3")
    frame = result_frame(_lists()).sample(frac=1.0, random_state=0)  # row order must not matter: rank does
    out = HeadRankReranker(ranker, top_k=2).transform(frame)
    for lst in _lists():
        rows = out[out["qid"] == lst.qid]
        assert list(rows["rank"]) == list(range(len(DOCS))) and rows["score"].is_monotonic_decreasing
        expected = [r.doc_id for r in ranker.rank(lst.query, lst.documents()[:2], lst.docids()[:2])]
        assert list(rows["docno"]) == expected + lst.docids()[2:]
        assert set(rows["text"]) == set(DOCS)  # the other columns travel with their rows
    cut = (pt.Transformer.from_df(result_frame(_lists())) >> HeadRankReranker(ranker, top_k=2)) % 1
    top = cut.transform(result_frame(_lists())[["qid", "query"]].drop_duplicates())
    assert len(top) == len(QUERIES) and list(top["docno"]) == list(out[out["rank"] == 0]["docno"])


def test_bad_frames_get_clear_errors(tiny_folder):
    reranker = HeadRankReranker(HeadRanker.from_pretrained(tiny_folder, heads="1-0"))
    with pytest.raises(ValueError, match="text"):
        reranker.transform(result_frame(_lists()).drop(columns=["text"]))
    twice = result_frame(_lists()[:1])
    with pytest.raises(ValueError, match="twice"):
        reranker.transform(pd.concat([twice, twice.iloc[:1]]))
    assert reranker.transform(result_frame([])).empty
    with pytest.raises(ValueError, match="loaded"):
        HeadRankReranker(HeadRanker.from_pretrained(tiny_folder, heads="1-0"), dtype="float32")


def test_a_highlights_column_for_the_reranked_rows(tiny_folder):
    ranker = HeadRanker.from_pretrained(tiny_folder, heads="0-1,1-0", dtype="float32")
    lists = _lists()
    lists[0].candidates[0] = Candidate("d0", "fleas live a year. wifi is wireless", title="Fleas")
    frame = result_frame(lists)
    out = HeadRankReranker(ranker, top_k=3, highlights=True).transform(frame)
    plain = HeadRankReranker(ranker, top_k=3).transform(frame)
    assert "highlights" not in plain and out[["qid", "docno", "rank"]].equals(plain[["qid", "docno", "rank"]])
    reranked = out[out["rank"] < 3]
    assert reranked["highlights"].notna().all() and out[out["rank"] >= 3]["highlights"].isna().all()
    row = out[(out["qid"] == "1") & (out["docno"] == "d0")].iloc[0]
    text = "Fleas\nfleas live a year. wifi is wireless"
    assert sorted(text[a:b] for a, b, _ in row["highlights"]) == ["Fleas", "fleas live a year.", "wifi is wireless"]
    assert sum(w for _, _, w in row["highlights"]) == pytest.approx(1.0)
