"""Readers and writers in the usual IR formats, NDCG on hand-made qrels, and the download path over HTTP."""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import math
import threading

import pytest

from headrank.data import DataError, load_candidates, load_qrels, load_queries, load_run, write_run
from headrank.datasets import download_dataset, load_dataset
from headrank.evaluation.metrics import evaluate, per_query


def test_ndcg_on_hand_made_qrels():
    qrels = {"q1": {"a": 3, "b": 1, "c": 0}, "q2": {"x": 1}}
    run = {"q1": {"b": 3.0, "a": 2.0, "c": 1.0}, "q2": {"y": 2.0, "x": 1.0}}
    # trec_eval's nDCG (the one DL figures are published with) uses linear gains
    ideal_q1 = 3 / math.log2(2) + 1 / math.log2(3)
    q1 = (1 / math.log2(2) + 3 / math.log2(3)) / ideal_q1
    q2 = (1 / math.log2(3)) / 1.0
    assert per_query(run, qrels)["q1"] == pytest.approx(q1)
    metrics = evaluate(run, qrels, ["nDCG@10", "RR@10"])
    assert metrics["ndcg@10"] == pytest.approx((q1 + q2) / 2)
    assert metrics["rr@10"] == pytest.approx((1 + 0.5) / 2)
    with pytest.raises(ValueError, match="no query"):
        evaluate({"zz": {"a": 1.0}}, qrels)


def test_queries_in_three_formats(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"qid": "1", "text": "a b"}\n{"_id": "2", "text": "c"}\n')
    (tmp_path / "q.tsv").write_text("1\ta b\n2\tc\n")
    (tmp_path / "q.xml").write_text("<top>\n<num> Number: 1\n<title> a b\n<desc> x\n</top>\n<top><num>2<title>c</top>")
    for name in ("q.jsonl", "q.tsv", "q.xml"):
        assert load_queries(tmp_path / name) == {"1": "a b", "2": "c"}
    (tmp_path / "bad.tsv").write_text("just-one-column\n")
    with pytest.raises(DataError, match="qid<TAB>text"):
        load_queries(tmp_path / "bad.tsv")


def test_qrels_trec_and_beir(tmp_path):
    (tmp_path / "a.txt").write_text("1 0 d1 2\n1 0 d2 0\n")
    (tmp_path / "b.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t2\n1\td2\t0\n")
    assert load_qrels(tmp_path / "a.txt") == load_qrels(tmp_path / "b.tsv") == {"1": {"d1": 2, "d2": 0}}
    with pytest.raises(DataError, match="not found"):
        load_qrels(tmp_path / "missing.tsv")


def test_candidates_from_jsonl_rank_llm_and_run_plus_corpus(tmp_path):
    rows = [{"qid": "1", "query": "q", "docid": d, "rank": r, "text": d.upper()} for d, r in (("b", 2), ("a", 1))]
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    (lst,) = load_candidates(tmp_path / "c.jsonl.gz")
    assert lst.docids() == ["a", "b"] and lst.candidates[0].text == "A"
    nested = {"query": {"qid": "1", "text": "q"}, "candidates": [{"docid": "a", "score": 1, "doc": {"contents": "A"}}]}
    (tmp_path / "r.jsonl").write_text(json.dumps(nested) + "\n")
    assert load_candidates(tmp_path / "r.jsonl")[0].candidates[0].text == "A"
    write_run(tmp_path / "run.trec", {"1": [("b", 2.0), ("a", 1.0)]})
    assert load_run(tmp_path / "run.trec") == {"1": [("b", 2.0), ("a", 1.0)]}
    (tmp_path / "corpus.jsonl").write_text('{"_id": "a", "title": "T", "text": "A"}\n{"_id": "b", "text": "B"}\n')
    (lst,) = load_candidates(tmp_path / "run.trec", {"1": "q"}, tmp_path / "corpus.jsonl", depth=1)
    assert lst.docids() == ["b"] and lst.documents() == [{"text": "B", "title": ""}]
    with pytest.raises(DataError, match="give the queries"):
        load_candidates(tmp_path / "run.trec")
    (tmp_path / "bad.jsonl").write_text('{"qid": "1"}\n')
    with pytest.raises(DataError, match="lacks"):
        load_candidates(tmp_path / "bad.jsonl")


def test_shared_dl19_layout(data_dir):
    data = load_dataset("dl19", data_dir, depth=20)
    assert len(data.judged()) == 43
    assert all(len(c.candidates) == 20 for c in data.judged())
    train = load_dataset("scifact-train", data_dir, depth=5)
    assert len(train.lists) > 800 and train.lists[0].candidates[0].text


@pytest.fixture
def http_mirror(tmp_path):
    """A local HTTP server with raw files named as the public sources name them."""
    root = tmp_path / "mirror"
    root.mkdir()
    (root / "topics.dl19-passage.txt").write_text("1\thow long do fleas live\n2\twhat is wifi\n")
    (root / "qrels.dl19-passage.txt").write_text("1 0 d1 3\n1 0 d2 0\n2 0 d3 1\n")
    lines = [
        {
            "query": {"qid": "1", "text": "how long do fleas live"},
            "candidates": [
                {"docid": "d2", "score": 9.0, "doc": {"contents": "cats"}},
                {"docid": "d1", "score": 8.0, "doc": {"contents": "fleas live a year"}},
            ],
        },
        {
            "query": {"qid": "2", "text": "what is wifi"},
            "candidates": [{"docid": "d3", "score": 5.0, "doc": {"contents": "wifi is wireless"}}],
        },
    ]
    (root / "retrieve_results_dl19_top100.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "retrieve_results_covid_top100.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "qrels.beir-v1.0.0-trec-covid.test.txt").write_text("1 0 d1 2\n2 0 d3 1\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_converts_public_files_to_our_layout(tmp_path, http_mirror):
    folder = download_dataset("dl19", tmp_path / "data", base_url=http_mirror)
    assert sorted(p.name for p in folder.iterdir()) == ["candidates.bm25top100.jsonl.gz", "qrels.tsv", "queries.jsonl"]
    data = load_dataset("dl19", tmp_path / "data")
    assert data.qrels == {"1": {"d1": 3, "d2": 0}, "2": {"d3": 1}}
    assert [c.docids() for c in data.lists] == [["d2", "d1"], ["d3"]]
    with pytest.raises(DataError, match="could not download"):
        download_dataset("dl21", tmp_path / "data", base_url=http_mirror)


def test_download_takes_queries_from_the_candidates_when_a_set_has_no_topics_file(tmp_path, http_mirror):
    folder = download_dataset("trec-covid", tmp_path / "data", base_url=http_mirror)
    assert sorted(p.name for p in folder.iterdir()) == ["candidates.bm25top100.jsonl.gz", "qrels.tsv", "queries.jsonl"]
    data = load_dataset("trec-covid", tmp_path / "data")
    assert [(c.qid, c.query) for c in data.lists] == [("1", "how long do fleas live"), ("2", "what is wifi")]
    assert data.qrels == {"1": {"d1": 2}, "2": {"d3": 1}}


def test_missing_files_say_which_and_where_to_get_them(tmp_path):
    (tmp_path / "dl22").mkdir()
    (tmp_path / "dl22" / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(
        DataError, match=r"dl22: missing queries.jsonl, candidates.bm25top100.jsonl.gz .*headrank download dl22"
    ):
        load_dataset("dl22", tmp_path)
    with pytest.raises(DataError, match="no public BM25 top-100 with passage text exists for DL23"):
        load_dataset("dl23", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'msmarco': known are dl19, dl20"):
        load_dataset("msmarco", tmp_path)
