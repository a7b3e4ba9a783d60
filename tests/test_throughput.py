"""benchmarks/throughput.py end to end on tiny shapes (what gpu.sh runs on real ones): every row measured, the
batched path agreeing with one prompt per pass, and the report written."""

from __future__ import annotations

import json

from benchmarks.throughput import head_set, main, shapes, synthetic_prompt


def test_the_throughput_table_runs_on_tiny_shapes(tmp_path):
    argv = ["--shapes", "tiny", "--dtype", "float32", "--queries", "3", "--repeats", "1", "--top-k", "20"]
    result = main([*argv, "--budgets", "4096", "--generation-batch", "2", "--peak-size", "256", "--out", str(tmp_path)])
    table = result["tables"]["top-20"]
    paths = [r["path"] for r in table["rows"]]
    assert paths[:2] == ["HeadRank, 2 layers, one prompt per pass", "HeadRank, 2 layers"]
    assert any(p.startswith("HeadRank, all 4") for p in paths) and paths[-1].startswith("generation")
    batched = table["rows"][1]
    assert batched["passes"] == 2 and table["rows"][0]["passes"] == 6  # three prompts in one batch vs alone
    assert all(r["queries/s"] > 0 for r in table["rows"]) and batched["of peak"] > 0
    assert table["agreement"]["identical rankings"] == 3 and table["agreement"]["max relative difference"] < 1e-5
    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert saved["meta"]["shapes"] == "tiny" and "TFLOP/s" in (tmp_path / "throughput.md").read_text()


def test_synthetic_prompts_have_the_listwise_layout():
    import random

    spec = shapes("tiny")
    prompt = synthetic_prompt(spec, 5, random.Random(0))
    assert len(prompt.passage_spans) == 5 and prompt.passage_spans[-1][1] == prompt.query_start
    assert all(8 <= b - a <= 16 for a, b in prompt.passage_spans)
    heads = head_set(spec, 2, count=4)
    assert heads.depth == 2 and len(heads.heads) == 4


def test_a_run_stopped_early_leaves_the_tables_it_finished(tmp_path):
    """gpu.sh runs each table under a time limit: every finished stage is written, the unfinished one says so."""
    import argparse

    from benchmarks.throughput import markdown, run

    args = argparse.Namespace(
        shapes="tiny", device="cpu", dtype="float32", top_k=[20], budgets=[4096], queries=2, repeats=1,
        generate_at=[], generation_batch=2, agreement=2, peak_size=128,
    )  # fmt: skip
    snapshots = []
    run(args, lambda result: snapshots.append(json.loads(json.dumps(result, default=str))))
    first, last = snapshots[0]["tables"]["top-20"], snapshots[-1]["tables"]["top-20"]
    assert len(snapshots) == 2 and first["agreement"] is None
    assert [r["path"] for r in first["rows"]] == ["HeadRank, all 4, one prompt per pass", "HeadRank, all 4"]
    assert len(last["rows"]) == 4 and last["agreement"]["identical rankings"] == 2
    meta = {"shapes": "tiny", "dtype": "float32", "device": "cpu", "peak_size": 128, "queries": 2}
    text = markdown(snapshots[0], meta | {"machine": "m", "command": "c"})
    assert "Not finished" in text and "all 4" in text
