"""`headrank reproduce` end to end on the tiny model, offline: every step runs once, its outputs are kept (a
second call runs nothing), absent benchmarks are skipped and named, and the table carries the paired tests."""

from __future__ import annotations

import json

import pytest

from headrank.cli import main
from headrank.data import Candidate, CandidateList, write_candidates
from headrank.engine.testing import save_tiny
from headrank.evaluation.reproduce import METHODS, ReproduceConfig, reproduce

from .conftest import DOCS


def _dataset(folder, qids, grades_of):
    folder.mkdir(parents=True)
    queries = {q: f"question {q} about {DOCS[int(q) % len(DOCS)].split()[0]}" for q in qids}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"qid": q, "text": t}) + "\n" for q, t in queries.items()))
    rows = "".join(f"{q}\td{i}\t{g}\n" for q in qids for i, g in enumerate(grades_of(int(q))) if g)
    (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    lists = [
        CandidateList(q, queries[q], [Candidate(f"d{i}", DOCS[(i + int(q)) % len(DOCS)]) for i in range(len(DOCS))])
        for q in qids
    ]
    write_candidates(folder / "candidates.bm25top100.jsonl.gz", lists)


@pytest.fixture
def data(tmp_path):
    def grades(q: int) -> list[int]:
        return [(q + i) % 3 for i in range(len(DOCS))]  # adjacent grades in every list

    _dataset(tmp_path / "data" / "dl21", [str(q) for q in range(10, 20)], grades)
    _dataset(tmp_path / "data" / "dl19", [str(q) for q in range(1, 6)], grades)
    return tmp_path / "data"


def test_reproduce_runs_every_step_once_and_writes_the_table(data, tmp_path):
    model = save_tiny(tmp_path / "tiny")
    config = ReproduceConfig(
        model=str(model),
        data_dir=data,
        out=tmp_path / "out",
        train_datasets=("dl21", "dl22"),
        k=3,
        top_k=5,
        validation=0.3,
        train_args=("--epochs", "1", "--lists-per-step", "2", "--eval-every", "2", "--train-sample", "2"),
        download=False,
    )
    calls, said = [], []

    def cli(argv):
        calls.append(argv[0])
        return main(argv)

    table = reproduce(config, cli, said.append)
    assert calls == ["select-heads", "select-heads", "train"] + ["eval"] * len(METHODS)
    record = json.loads(table.with_suffix(".json").read_text())
    assert record["trained_on"] == ["dl21"] and "dl22" in " ".join(said)  # absent, so skipped and said
    assert "dl20" in record["skipped"] and "scifact" in record["skipped"]
    rows = {r["method"]: r for r in record["rows"]}
    assert set(rows) == set(METHODS) and all(r["dataset"] == "dl19" and r["queries"] == 5 for r in rows.values())
    assert all(0 <= r["ndcg@10"] <= 1 for r in rows.values())
    assert 0 < rows["headrank"]["p vs bm25"] <= 1 and 0 < rows["headrank"]["p vs selected"] <= 1
    eval_bm25 = json.loads((tmp_path / "out" / "eval" / "dl19" / "bm25" / "metrics.json").read_text())
    assert rows["bm25"]["ndcg@10"] == eval_bm25["ndcg@10"]
    assert json.loads((tmp_path / "out" / "qrhead" / "heads.json").read_text())["selection"]["lam"] == 0
    assert json.loads((tmp_path / "out" / "heads" / "heads.json").read_text())["selection"]["lam"] == 0.5
    assert "| dl19 | headrank |" in table.read_text()

    calls.clear()
    again = reproduce(config, cli, said.append)
    assert calls == [] and json.loads(again.with_suffix(".json").read_text())["rows"] == record["rows"]
