"""The console script end to end on the tiny model, and its error messages."""

from __future__ import annotations

import json
import math

import pytest

from headrank.cli import main
from headrank.data import load_candidates, load_run
from headrank.ranker import HeadRanker
from headrank.testing import save_tiny


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny")


def _eval(data_dir, *args) -> int:
    """`headrank eval --data-dir DATA ARGS... --quiet`, arguments given as any printable values."""
    return main(["eval", "--data-dir", str(data_dir), *map(str, args), "--quiet"])


def _rerank(model, heads: str, candidates, out) -> int:
    return main(
        [
            "rerank",
            "--model",
            str(model),
            "--heads",
            heads,
            "--candidates",
            str(candidates),
            "--out",
            str(out),
            "--quiet",
        ]
    )


@pytest.fixture
def mini_data(tmp_path):
    """A two-query dataset in the dl19 layout, and the same as dl21 (for training)."""
    from headrank.data import Candidate, CandidateList, write_candidates

    docs = {"1": ["fleas live a year", "cats purr", "the host of fleas"], "2": ["wifi is wireless", "goldfish grow"]}
    queries = {"1": "how long do fleas live", "2": "what is wifi"}
    for name in ("dl19", "dl21"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        lines = "".join(json.dumps({"qid": q, "text": t}) + "\n" for q, t in queries.items())
        (folder / "queries.jsonl").write_text(lines)
        (folder / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1-0\t3\n1\t1-2\t2\n2\t2-0\t2\n")
        lists = [
            CandidateList(q, queries[q], [Candidate(f"{q}-{r}", t) for r, t in enumerate(texts)])
            for q, texts in docs.items()
        ]
        write_candidates(folder / "candidates.bm25top100.jsonl.gz", lists)
    return tmp_path / "data"


def test_eval_bm25_and_icr(tiny_folder, mini_data, tmp_path, capsys):
    assert _eval(mini_data, "--dataset", "dl19", "--method", "bm25", "--out", tmp_path / "bm25") == 0
    metrics = json.loads((tmp_path / "bm25" / "metrics.json").read_text())
    # q1: grades 3, 0, 2 in BM25 order; q2: ideal
    q1 = (3 + 2 / math.log2(4)) / (3 + 2 / math.log2(3))
    assert metrics["ndcg@10"] == pytest.approx((q1 + 1.0) / 2) and metrics["queries"] == 2
    assert _eval(mini_data, "--method", "icr", "--model", tiny_folder, "--top-k", 2, "--out", tmp_path / "icr") == 0
    metrics = json.loads((tmp_path / "icr" / "metrics.json").read_text())
    for key in ("ndcg@10", "queries", "seconds_per_query", "peak_rss_mb", "layers_run"):
        assert key in metrics
    assert metrics["layers_run"] == 4 and metrics["heads"] == "all heads"
    run = load_run(tmp_path / "icr" / "run.trec")
    assert set(run) == {"1", "2"}
    assert [d for d, _ in run["1"]][2] == "1-2"  # below top-k: first-stage order kept
    assert "ndcg@10" in capsys.readouterr().out


def test_rerank_writes_a_trec_run(tiny_folder, mini_data, tmp_path):
    out = tmp_path / "run.trec"
    candidates = mini_data / "dl19" / "candidates.bm25top100.jsonl.gz"
    assert _rerank(tiny_folder, "0-1,2-3", candidates, out) == 0
    run = load_run(out)
    ranker = HeadRanker.from_pretrained(tiny_folder, heads="0-1,2-3")
    moved = False
    for lst in load_candidates(candidates):
        expected = [r.doc_id for r in ranker.rank(lst.query, lst.documents(), lst.docids())]
        assert [d for d, _ in run[lst.qid]] == expected  # the model's order, written as it ranked
        moved |= expected != lst.docids()
    assert moved  # and not the first stage's: a reranker that does nothing fails here


def test_cli_errors_are_clear(tiny_folder, mini_data, tmp_path, capsys):
    assert main(["eval", "--data-dir", str(tmp_path / "nowhere"), "--method", "bm25", "--out", str(tmp_path)]) == 2
    assert "data directory not found" in capsys.readouterr().err
    assert _eval(mini_data, "--method", "icr", "--model", tmp_path / "x.gguf", "--out", tmp_path) == 2
    assert "GGUF file not found" in capsys.readouterr().err
    candidates = mini_data / "dl19" / "candidates.bm25top100.jsonl.gz"
    assert _rerank(tiny_folder, "7-7", candidates, tmp_path / "r") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _eval(mini_data, "--dataset", "msmarco-v9", "--method", "bm25", "--out", tmp_path) == 2
    assert "unknown dataset" in capsys.readouterr().err
    assert main(["rerank", "--candidates", str(tmp_path / "x.jsonl"), "--out", str(tmp_path / "r")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_select_train_eval_analyze_pipeline(tiny_folder, mini_data, tmp_path, capsys):
    model = ["--model", str(tiny_folder)]
    data = ["--data-dir", str(mini_data)]
    sel = tmp_path / "sel"
    assert main(["select-heads", *model, *data, "--k", "3", "--out", str(sel), "--quiet"]) == 0
    heads = json.loads((sel / "heads.json").read_text())["heads"]
    assert len(heads) == 3 and (sel / "heatmap_entropy.png").is_file() and (sel / "head_table.npz").is_file()
    assert main(["select-heads", *data, "--k", "2", "--lam", "0", "--reuse", "--out", str(sel), "--quiet"]) == 0
    assert len(json.loads((sel / "heads.json").read_text())["heads"]) == 2
    budget = ["select-heads", *data, "--k", "3", "--max-depth", "2", "--reuse", "--out", str(sel / "d2"), "--quiet"]
    (sel / "d2").mkdir()
    (sel / "d2" / "head_table.npz").symlink_to(sel / "head_table.npz")
    assert main(budget) == 0
    layers = {h["layer"] for h in json.loads((sel / "d2" / "heads.json").read_text())["heads"]}
    assert layers <= {0, 1} and f"truncation depth {max(layers) + 1}:" in capsys.readouterr().out
    art = tmp_path / "art"
    train = ["train", *model, *data, "--heads", str(sel / "heads.json"), "--epochs", "2", "--out", str(art), "--quiet"]
    assert main(train) == 0
    assert (art / "headrank.json").is_file() and (art / "learning_curves.png").is_file()
    assert sorted(p.name for p in (art / "checkpoints" / "last").iterdir()) == [
        "adapter.safetensors",
        "best.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ]
    manifest = json.loads((art / "headrank.json").read_text())
    selection = json.loads((sel / "heads.json").read_text())["selection"]
    assert selection["k"] == 2 and selection["lam"] == 0 and selection["datasets"] == ["dl21"]
    assert manifest["data"]["heads_selection"] == selection  # where the trained heads came from
    assert manifest["training"]["steps"] == len(json.loads((art / "history.json").read_text())["steps"]) > 0
    ev = tmp_path / "ev"
    assert main(["eval", *data, "--method", "headrank", "--artifact", str(art), "--out", str(ev), "--quiet"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert metrics["trained_on"] == ["dl21"] and metrics["layers_run"] <= 4
    assert (ev / "scores.jsonl").read_text().count("\n") == 5
    assert main(["analyze", str(ev), *data, "--dataset", "dl19", "--out", str(tmp_path / "an")]) == 0
    assert "selectivity_gap" in capsys.readouterr().out
    assert main(["eval", *data, "--method", "qrhead", "--out", str(tmp_path / "q")]) == 2
    assert "needs --heads" in capsys.readouterr().err


def test_help_imports_no_torch():
    """`headrank --help` (and building every subcommand's parser) stays light: torch loads with a model only."""
    import subprocess
    import sys

    code = "import sys, headrank.cli; headrank.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
