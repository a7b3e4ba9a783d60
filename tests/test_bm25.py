"""BM25 first-stage retrieval on a hand-made corpus: ranking, stemming, index round trip, CLI output."""

from __future__ import annotations

import json

import pytest

from headrank.baselines.bm25 import BM25Config, BM25Retriever
from headrank.cli import main
from headrank.data import DataError, load_candidates, load_run

CORPUS = {
    "fleas": ("Fleas", "Adult fleas live up to a year on a host animal."),
    "goldfish": ("Goldfish", "Goldfish grow with the size of their tank."),
    "wifi": ("Wireless", "Wifi and bluetooth are wireless technologies."),
    "war": ("History", "The United States entered World War One in 1917."),
}
QUERIES = {"q1": "how long does a flea live", "q2": "wireless technology"}


def test_search_ranks_the_matching_document_first_through_stemming():
    run = BM25Retriever.build(CORPUS).search(QUERIES, k=3)
    assert run["q1"][0][0] == "fleas"  # "flea"/"fleas", "live"/"lives" meet only through the stemmer
    assert run["q2"][0][0] == "wifi"
    assert all(score > 0 for _, score in run["q1"])
    assert [s for _, s in run["q1"]] == sorted((s for _, s in run["q1"]), reverse=True)
    unstemmed = BM25Retriever.build(CORPUS, BM25Config(stemmer=None)).search({"q": "flea"}, k=3)
    assert unstemmed["q"] == []


def test_title_is_indexed_and_k_larger_than_corpus():
    run = BM25Retriever.build(CORPUS).search({"q": "history"}, k=50)
    assert [d for d, _ in run["q"]] == ["war"]


def test_index_round_trip(tmp_path):
    built = BM25Retriever.build(CORPUS, BM25Config(k1=1.2, b=0.75))
    built.save(tmp_path / "index")
    loaded = BM25Retriever.load(tmp_path / "index")
    assert loaded.config == built.config and loaded.docids == built.docids
    for qid, ranked in built.search(QUERIES).items():
        again = loaded.search(QUERIES)[qid]
        assert [d for d, _ in again] == [d for d, _ in ranked]
        assert [s for _, s in again] == pytest.approx([s for _, s in ranked])


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(DataError, match="empty"):
        BM25Retriever.build({})
    with pytest.raises(DataError, match="no headrank BM25 index"):
        BM25Retriever.load(tmp_path)
    with pytest.raises(ValueError, match="k must be positive"):
        BM25Retriever.build(CORPUS).search(QUERIES, k=0)


def test_retrieve_command_writes_candidates_and_runs(tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in CORPUS.items()))
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"qid": q, "text": t}) + "\n" for q, t in QUERIES.items()))
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tfleas\t1\nq2\twifi\t1\n")
    out = tmp_path / "candidates.jsonl.gz"
    args = ["retrieve", "--corpus", str(corpus), "--queries", str(queries), "--k", "2"]
    assert main([*args, "--out", str(out), "--index", str(tmp_path / "index"), "--qrels", str(qrels)]) == 0
    assert "'ndcg@10': 1.0" in capsys.readouterr().out
    lists = {c.qid: c for c in load_candidates(out)}
    assert lists["q1"].query == QUERIES["q1"] and lists["q1"].candidates[0].docid == "fleas"
    assert lists["q1"].candidates[0].title == "Fleas" and "host animal" in lists["q1"].candidates[0].text
    # the second call loads the saved index, and any other name gets a TREC run
    assert main([*args, "--out", str(tmp_path / "run.trec"), "--index", str(tmp_path / "index")]) == 0
    assert load_run(tmp_path / "run.trec")["q2"][0][0] == "wifi"
