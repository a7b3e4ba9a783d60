"""Ray Data batch reranking on a local Ray with 2 workers and the tiny model equals the single-process run."""

from __future__ import annotations

import gzip
import json

import pytest

ray = pytest.importorskip("ray")  # the `distributed` extra: without it these tests skip, they do not error
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from headrank.cli import main  # noqa: E402
from headrank.data import load_candidates, load_run  # noqa: E402
from headrank.distributed import RayOptions, connect, rerank_distributed  # noqa: E402
from headrank.engine.testing import save_tiny  # noqa: E402
from headrank.ranker import HeadRanker  # noqa: E402

WORDS = [
    "fleas",
    "live",
    "a",
    "year",
    "cats",
    "purr",
    "the",
    "host",
    "of",
    "wifi",
    "is",
    "wireless",
    "goldfish",
    "grow",
    "war",
    "1917",
    "range",
    "tank",
]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """Nine queries of seven candidates each, as flat jsonl.gz and as parquet."""
    rows = [
        {
            "qid": f"q{q}",
            "query": f"{WORDS[q]} {WORDS[3 * q % len(WORDS)]}",
            "docid": f"q{q}-d{i}",
            "rank": i + 1,
            "text": " ".join(WORDS[(q + i * j) % len(WORDS)] for j in range(9)),
        }
        for q in range(9)
        for i in range(7)
    ]
    folder = tmp_path_factory.mktemp("candidates")
    with gzip.open(folder / "cands.jsonl.gz", "wt") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    pq.write_table(pa.Table.from_pylist(rows), folder / "cands.parquet")
    return folder


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


def test_parquet_candidates_read_as_jsonl(candidates):
    assert load_candidates(candidates / "cands.parquet") == load_candidates(candidates / "cands.jsonl.gz")


def test_bad_options_are_refused_before_ray_starts(capsys):
    with pytest.raises(ValueError, match="workers and batch_size"):
        RayOptions(workers=0)
    with pytest.raises(ValueError, match="CPUs here"):
        connect(RayOptions(workers=10_000))
    assert main(["rerank-distributed", "--model", "/no/such/model", "--candidates", "x.jsonl", "--out", "r"]) == 2
    assert "model path not found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="parquet table is written beside it"):
        rerank_distributed([], HeadRanker.from_pretrained, "run.parquet")
    assert not ray.is_initialized()


def test_two_ray_workers_give_the_single_process_run(tiny_folder, candidates, local_ray, tmp_path, capsys):
    model = ["--model", str(tiny_folder), "--heads", "0-1,1-3,3-0", "--top-k", "5", "--quiet"]
    single, distributed = tmp_path / "single.trec", tmp_path / "ray.trec"
    assert main(["rerank", *model, "--candidates", str(candidates / "cands.jsonl.gz"), "--out", str(single)]) == 0
    argv = ["rerank-distributed", *model, "--candidates", str(candidates / "cands.parquet"), "--out", str(distributed)]
    assert main([*argv, "--workers", "2", "--batch-size", "2"]) == 0
    assert "reranked 9 queries on Ray" in capsys.readouterr().out
    assert distributed.read_text() == single.read_text()
    run = load_run(single)
    table = pq.read_table(tmp_path / "ray.parquet").to_pylist()
    assert [(r["qid"], r["docid"], r["score"]) for r in table] == [
        (qid, docid, score) for qid, ranked in run.items() for docid, score in ranked
    ]
    assert [r["rank"] for r in table[:7]] == list(range(1, 8))
