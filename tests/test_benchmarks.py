"""Every benchmark entry point run once on the tiny model and tiny data written here: each must finish and report
what its inputs imply (layers run, windows, tokens, agreements, the files and keys it writes), checked against
an independent computation where one is cheap. Timings are reported by the benchmarks, never asserted here.
benchmarks/throughput.py has its own run in tests/test_throughput.py."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from headrank.cli import main as cli
from headrank.data import run_from_ranking, scored
from headrank.datasets import load_dataset
from headrank.engine.testing import save_tiny
from headrank.evaluation.metrics import evaluate, ndcg_at
from headrank.ranker import HeadRanker

from .tiny_data import write_data_dir

HEADS = "1-0,1-3"
"""two heads of layer 1: HeadRank runs 2 of the tiny model's 4 layers."""
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices gain nothing from a second thread, and threads that spin on busy shared cores lose much."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_data_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def artifact(tiny_folder, data, tmp_path_factory) -> Path:
    """A tiny trained artifact in a runs folder (what the training table, validation and budgets read)."""
    folder = tmp_path_factory.mktemp("runs") / "tiny-dpo"
    argv = ["train", "--model", str(tiny_folder), "--heads", HEADS, "--data-dir", str(data), "--epochs", "1"]
    assert cli([*argv, "--out", str(folder), "--quiet"]) == 0
    return folder


def finite(rows: list[dict]) -> bool:
    """Every number in every row is finite (booleans and text aside)."""
    values = [v for row in rows for v in row.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    return bool(values) and all(math.isfinite(v) for v in values)


def prompt_tokens(ranker: HeadRanker, lst) -> int:
    """Tokens one list costs HeadRank: every window's prompt and its N/A twin."""
    return sum(len(p.input_ids) + len(p.calibration_ids) for p in ranker.prompts(lst.query, lst.documents()))


def test_perf_runs_every_section(tiny_folder, data, tmp_path):
    from benchmarks.perf import main

    out = tmp_path / "perf"
    argv = ["--model", str(tiny_folder), "--heads", HEADS, "--data-dir", str(data), "--dataset", "dl19"]
    argv += ["--queries", "2", "--list-depths", "3,5", "--dtype", "float32", "--dtype-queries", "1", "--sizes", "5"]
    main([*argv, "--lengths", "8,16", "--device", "cpu", "--out", str(out)])
    result = json.loads((out / "perf.json").read_text())
    lists = load_dataset("dl19", data).judged()[:2]
    ranker = HeadRanker.from_pretrained(tiny_folder, HEADS)

    methods = {(r["method"].split(" (")[0], r["list depth"]): r for r in result["methods"]}
    assert set(methods) == {(m, d) for m in ("HeadRank", "ICR", "RankGPT") for d in (3, 5)}
    assert finite(result["methods"])
    for depth in (3, 5):
        headrank, icr = methods["HeadRank", depth], methods["ICR", depth]
        assert (headrank["layers run"], icr["layers run"], methods["RankGPT", depth]["layers run"]) == (2, 4, 4)
        assert headrank["forward passes"] == 2 and headrank["windows"] == 1 and headrank["generated tokens"] == 0
        want = statistics.fmean(prompt_tokens(ranker, lst.head(depth)) for lst in lists)
        assert headrank["prompt tokens"] == pytest.approx(want) and icr["prompt tokens"] == pytest.approx(want)
    assert {r["dtype"] for r in result["dtype"]} == {"float32", "bfloat16"} and finite(result["dtype"])

    top = lists[0].head(20)
    assert result["profile"]["windows"] == [1, 1]
    assert result["profile"]["prompt tokens"] == [len(ranker.prompts(top.query, top.documents())[0].input_ids)] * 2
    flops = result["flops"]
    assert flops["prompt_tokens"] == result["profile"]["prompt tokens"][0]
    assert 0 < flops["headrank_gflop"] < flops["icr_gflop"] and math.isfinite(flops["achieved_over_attainable"])
    assert result["ops"] and all(r["calls"] >= 1 for r in result["ops"])

    assert [(r["method"], r["passages"], r["windows"]) for r in result["passages"]] == [
        ("HeadRank", 5, 1),
        ("ICR", 5, 1),
    ]
    lengths = {r["passage tokens"]: r["prompt tokens"] for r in result["lengths"]}
    assert lengths[16] - lengths[8] == 20 * (16 - 8)  # 20 passages, each cut to exactly that many tokens
    early = {r["forward pass"]: r for r in result["forward"]}["+ early exit at the last layer (default)"]
    assert early["max |attention diff|"] < 1e-6  # early exit keeps the attention rows
    assert all(r["same rankings"] == "2/2 lists" for r in result["optimisations"])
    text = (out / "perf.md").read_text()
    assert "## Where the time of one query goes" in text and "(depth 2 of 4 layers)" in text
    assert all((out / name).stat().st_size > 0 for name in ("methods.png", "scaling.png", "profile.png"))


def test_train_step_times_both_adapter_modes(tiny_folder, data, tmp_path):
    from benchmarks.train_step import main

    out = tmp_path / "train_step.json"
    argv = ["--data-dir", str(data), "--model", str(tiny_folder), "--heads", HEADS, "--lists", "2", "--repeats", "1"]
    result = main([*argv, "--out", str(out)])
    assert json.loads(out.read_text()) == result and result["lists"] == 2
    rows = result["seconds_per_list"]
    assert set(rows) == {
        "query span, prefix recomputed (before)",
        "query span, prefix cached (after)",
        "all tokens (gradient through the passages)",
        "float16 cache: max score error / score std",
    }
    assert all(math.isfinite(v) for v in [*rows.values(), result["speed-up of the cache"]])
    assert rows["float16 cache: max score error / score std"] < 0.05  # a float16 cache is close, not exact


def test_batch_budget_agrees_with_one_prompt_per_pass(artifact, data, tmp_path):
    from benchmarks.batch_budget import main

    out = tmp_path / "budgets"
    argv = ["--data-dir", str(data), "--dataset", "dl19", "--artifact", str(artifact), "--dtype", "float32"]
    main([*argv, "--budgets", "1,4096", "--chunk", "2", "--out", str(out)])
    saved = json.loads((out / "dl19-float32.json").read_text())
    rows = {r["max_batch_tokens"]: r for r in saved["rows"]}
    assert set(rows) == {1, 4096} and finite(saved["rows"])
    assert all(r["identical rankings"] == "4/4" and float(r["max rel. score diff"]) < 1e-5 for r in rows.values())
    assert "max rel. score diff" in (out / "dl19-float32.md").read_text()


def _head_table(tiny_folder, data, out: Path, dataset: str) -> str:
    """`headrank select-heads` on one dataset (all heads, full depth): NAME=PATH of its head table."""
    argv = ["select-heads", "--model", str(tiny_folder), "--data-dir", str(data), "--dataset", dataset, "--k", "3"]
    assert cli([*argv, "--out", str(out / dataset), "--quiet"]) == 0
    return f"{dataset}={out / dataset / 'head_table.npz'}"


def test_depth_pareto_scores_every_budget_from_the_tables(tiny_folder, data, tmp_path):
    from benchmarks.depth_pareto import main

    tables = [_head_table(tiny_folder, data, tmp_path / "tables", name) for name in ("dl21", "dl19")]
    out = tmp_path / "pareto"
    argv = ["--data-dir", str(data), "--train", tables[0], "--test", tables[1], "--k", "3", "--model", str(tiny_folder)]
    rows, meta = main([*argv, "--time-queries", "1", "--out", str(out)])
    by = {r["selection"]: r for r in rows}
    assert set(by) == {"ICR (all heads)", "budget 2", "budget 3", "budget 4"} and finite(rows)
    assert by["ICR (all heads)"]["layers run"] == 4 and all(by[f"budget {b}"]["layers run"] <= b for b in (2, 3, 4))
    # the head tables are float32 on every machine, and score windows alone
    icr = HeadRanker.from_pretrained(tiny_folder, dtype="float32").variant(merge="scaled")
    dl19 = load_dataset("dl19", data)
    run = {lst.qid: dict(zip(lst.docids(), icr.score(lst.query, lst.documents()))) for lst in dl19.judged()}
    assert by["ICR (all heads)"]["dl19 nDCG@10"] == pytest.approx(evaluate(run, dl19.qrels, ["nDCG@10"])["ndcg@10"])
    chosen = by[meta["chosen"]]
    assert chosen["vs unbudgeted"] >= -0.005 and all("time / ICR" in r for r in rows)
    heads = json.loads((out / "heads.json").read_text())
    assert max(h["layer"] for h in heads["heads"]) + 1 == chosen["layers run"] and heads["selection"]["k"] == 3
    assert json.loads((out / "depth_pareto.json").read_text())["rows"] == rows


def test_distributed_dl19_equals_the_single_process_run(tiny_folder, data, tmp_path):
    pytest.importorskip("ray")
    from benchmarks.distributed_dl19 import main

    reference = tmp_path / "icr"
    icr = ["--method", "icr", "--model", str(tiny_folder)]
    assert cli(["eval", "--data-dir", str(data), *icr, "--out", str(reference), "--quiet"]) == 0
    argv = ["--data-dir", str(data), "--reference", str(reference / "run.trec"), "--model", str(tiny_folder)]
    result = main([*argv, "--workers", "1", "--out", str(tmp_path / "ray")])
    assert result["identical_run_file"] and result["queries"] == 4
    single = json.loads((reference / "metrics.json").read_text())["ndcg@10"]
    assert result["ndcg@10"] == result["reference_ndcg@10"] == round(single, 4)
    assert json.loads((tmp_path / "ray" / "result.json").read_text()) == result


def test_load_test_serves_every_request(tiny_folder, data, tmp_path):
    pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    from benchmarks.load_test import main

    out = tmp_path / "load.md"
    argv = ["--data-dir", str(data), "--model", str(tiny_folder), "--clients", "2", "--duration", "1", "--docs", "3"]
    row = main([*argv, "--out", str(out)])
    assert row["ok"] >= 2 and row["5xx"] == 0 and row["other errors"] == 0
    assert row["requests"] == row["ok"] + row["429"] and row["server peak RSS MB"] > 0
    assert "requests/s" in out.read_text() and out.with_suffix(".server.log").is_file()


def test_pyterrier_dl19_reranks_like_the_ranker(tiny_folder, data):
    pytest.importorskip("pyterrier")
    from benchmarks.pyterrier_dl19 import main

    table = main(["--data-dir", str(data), "--top-k", "5", "--model", str(tiny_folder)])
    assert list(table["name"]) == ["BM25", "BM25 >> HeadRankReranker(top_k=5)"]
    dl19 = load_dataset("dl19", data)
    lists = dl19.judged()
    first_stage = run_from_ranking((lst.qid, lst.docids()) for lst in lists)
    icr = HeadRanker.from_pretrained(tiny_folder)
    reranked = {lst.qid: dict(zip(lst.docids(), icr.score(lst.query, lst.documents()))) for lst in lists}
    want = [evaluate(run, dl19.qrels, ["nDCG@10"])["ndcg@10"] for run in (scored(first_stage), reranked)]
    assert list(table["nDCG@10"]) == pytest.approx(want)


def test_results_table_collects_eval_metrics(data, tmp_path):
    from benchmarks.results_table import COLUMNS, main

    for dataset in ("dl21", "dl19"):  # written in that order, listed by dataset
        folder = tmp_path / "table" / "bm25" / dataset
        assert (
            cli(["eval", "--data-dir", str(data), "--dataset", dataset, "--method", "bm25", "--out", str(folder)]) == 0
        )
    paths = sorted(str(p) for p in (tmp_path / "table").glob("*/*/metrics.json"))
    lines = main(paths).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == COLUMNS
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [(c[0], c[1], c[2]) for c in cells] == [("bm25", "dl19", "4"), ("bm25", "dl21", "10")]
    for c in cells:
        dataset = load_dataset(c[1], data)
        bm25 = scored(run_from_ranking((lst.qid, lst.docids()) for lst in dataset.judged()))
        assert float(c[3]) == pytest.approx(evaluate(bm25, dataset.qrels, ["nDCG@10"])["ndcg@10"], abs=1e-4)


def test_training_table_has_a_row_per_artifact(artifact):
    from benchmarks.training_table import main, rows

    manifest = json.loads((artifact / "headrank.json").read_text())
    history = json.loads((artifact / "history.json").read_text())
    (row,) = rows(artifact.parent)
    assert row["run"] == artifact.name and row["data"] == "dl21" and row["steps"] == len(history["steps"]) > 0
    assert row["val ndcg step0"] == history["evals"][0]["validation"]["ndcg@10"]
    assert row["best step"] == manifest["training"]["best_step"]
    assert artifact.name in main([str(artifact.parent)]).splitlines()[2]


def test_validation_compare_pairs_each_validation_list(artifact, tiny_folder, data, tmp_path):
    from benchmarks.validation_compare import main

    out = tmp_path / "compare.md"
    (row,) = main([str(artifact), "--data-dir", str(data), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    manifest = json.loads((artifact / "headrank.json").read_text())
    per_list = json.loads(out.with_suffix(".json").read_text())["per_list"][artifact.name]
    assert sorted(per_list) == sorted(manifest["data"]["validation_qids"]) and row["lists"] == len(per_list) > 0
    assert sum(map(int, row["W/L/T"].split("/"))) == row["lists"] and 0 <= row["p"] <= 1
    untrained = HeadRanker.from_pretrained(tiny_folder, HEADS, dtype="float32")
    dl21 = load_dataset("dl21", data)
    ndcg = []
    for lst in dl21.judged():
        if lst.qid in per_list:
            grades = np.asarray([dl21.qrels[lst.qid].get(d, 0) for d in lst.docids()], dtype=float)
            scores = np.asarray(untrained.score(lst.query, lst.documents()))
            ndcg.append(ndcg_at(scores[None], grades, list(dl21.qrels[lst.qid].values()))[0])
    assert row["untrained"] == pytest.approx(np.mean(ndcg), abs=1e-6)  # its float16 prefixes rank as float32 does
    assert row["delta"] == pytest.approx(row["trained (best checkpoint)"] - row["untrained"])


def test_warm_prefix_cache_fills_the_cache_once(tiny_folder, data, tmp_path, capsys):
    from benchmarks.warm_prefix_cache import main

    cache = tmp_path / "cache"
    argv = ["--model", str(tiny_folder), "--heads", HEADS, "--data-dir", str(data), "--cache-dir", str(cache)]
    main([*argv, "--out", str(tmp_path / "unused")])
    orders = {tuple(c.text for c in lst.candidates) for lst in load_dataset("dl21", data).judged()}
    assert len(orders) == 5  # ten queries over five rotations of the same passages: five distinct prefixes
    assert len(list(cache.glob("*/*.safetensors"))) == len(orders)
    assert f"computed {len(orders)} prefixes" in capsys.readouterr().out
    main([*argv, "--out", str(tmp_path / "unused")])
    assert "computed 0 prefixes" in capsys.readouterr().out  # a second run reads them all


def test_gpu_checks_pass_on_the_cpu(tmp_path):
    from benchmarks.gpu_checks import main

    rows = main(["--device", "cpu", "--scheduler-shapes", "tiny", "--scheduler-requests", "32", "--out", str(tmp_path)])
    passed = {r["check"].split(":")[0]: r["passed"] for r in rows}
    assert passed == {
        "families": True,
        "no host synchronisation inside a scoring pass": None,  # CUDA only
        "training steps and curves on the device": True,
        "scheduler": None,  # measured; the 5x target is the GPU's
    }
    assert "req/s at 1 client" in rows[-1]["measured"]
    assert json.loads((tmp_path / "gpu_checks.json").read_text())["rows"] == rows


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.sh")))
def test_benchmark_scripts_parse(script):
    assert subprocess.run(["bash", "-n", str(BENCHMARKS / script)], capture_output=True).returncode == 0


def _trec(rankings: dict[str, str]) -> str:
    """A TREC run of one-letter document ids, best first, per query."""
    return "".join(f"{q} Q0 {d} {r} {9 - r} x\n" for q, docs in rankings.items() for r, d in enumerate(docs, 1))


def _refuses_bad_input(main, argv: list[str], bad_args: list[list[str]], tmp_path) -> None:
    """Each bad argument, and a first stage that lacks a query, end in argparse's error before anything is written."""
    for bad in bad_args:
        with pytest.raises(SystemExit):
            main([*argv, *bad, "--out", str(tmp_path / "bad.json")])
    (tmp_path / "first.trec").write_text(_trec({"q1": "a"}))
    with pytest.raises(SystemExit):
        main([*argv, "--out", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_input_fusion_lifts_what_both_runs_agree_on(tmp_path):
    from benchmarks.input_fusion import main, rrf

    # the chain lifted d from the bottom; fused with the first stage at equal weight, a leads (ranks 2 and 1)
    assert [d for d, _ in rrf(["d", "a", "b", "c"], ["a", "b", "c", "d"], k=1, weight=1.0)] == ["a", "d", "b", "c"]
    # no weight on the first stage: the chain as it is
    assert [d for d, _ in rrf(["d", "a", "b", "c"], ["a", "b", "c", "d"], k=1, weight=0.0)] == ["d", "a", "b", "c"]
    (tmp_path / "qrels.tsv").write_text("q1 0 a 1\nq1 0 c 0\nq2 0 b 1\n")
    (tmp_path / "chain.trec").write_text(_trec({"q1": "dcba", "q2": "bac"}))
    (tmp_path / "first.trec").write_text(_trec({"q1": "abcd", "q2": "abcd"}))
    argv = ["--qrels", str(tmp_path / "qrels.tsv"), "--chain", str(tmp_path / "chain.trec")]
    argv += ["--first-stage", str(tmp_path / "first.trec"), "--k", "1", "--weights", "1"]
    (row,) = main([*argv, "--out", str(tmp_path / "out.json")])
    # q1: a goes from 4th (nDCG 1/log2 5) to 2nd (1/log2 3); q2: b is 1st in the chain and in the fusion
    chain_q1, fused_q1 = 1 / math.log2(5), 1 / math.log2(3)
    assert row["chain_ndcg@10"] == pytest.approx(round((chain_q1 + 1) / 2, 4))
    assert row["ndcg@10"] == pytest.approx(round((fused_q1 + 1) / 2, 4))
    assert (row["vs_chain"]["wins"], row["vs_chain"]["losses"]) == (1, 0)
    assert json.loads((tmp_path / "out.json").read_text())["rows"] == [row]
    _refuses_bad_input(main, argv, [["--k", "sixty"], ["--weights", "-1"]], tmp_path)


def test_lifts_count_what_a_long_list_brings_up_and_pushes_out(tmp_path):
    from benchmarks.lifts import main

    (tmp_path / "qrels.tsv").write_text("q1 0 e 2\nq1 0 b 2\nq1 0 f 1\nq2 0 a 2\n")
    (tmp_path / "first.trec").write_text(_trec({"q1": "abcdef", "q2": "abcdef"}))
    (tmp_path / "top.trec").write_text(_trec({"q1": "bac", "q2": "bac"}))
    # q1 lifts e (relevant) and f (grade 1: not relevant at grade 2) and leaves out b (relevant) and c; q2 keeps a, b
    (tmp_path / "long.trec").write_text(_trec({"q1": "efab", "q2": "abcd"}))
    argv = [f"long={tmp_path / 'long.trec'}", "--qrels", str(tmp_path / "qrels.tsv"), "--relevant-grade", "2"]
    argv += ["--first-stage", str(tmp_path / "first.trec"), "--reference", str(tmp_path / "top.trec")]
    (row,) = main([*argv, "--depth", "3", "--cut", "3", "--out", str(tmp_path / "out.json")])
    assert row == {
        "run": "long",
        "queries": 2,
        "lifted_per_query": 1.0,
        "lifted_relevant": 0.5,
        "left_out_per_query": 1.0,
        "left_out_relevant": 0.5,
    }
    assert json.loads((tmp_path / "out.json").read_text())["rows"] == [row]
    _refuses_bad_input(main, argv, [["no-label"], ["--depth", "0"]], tmp_path)
