"""Slow end-to-end runs on the embedded SmolLM2 model (pytest -m slow)."""

from __future__ import annotations

import json

import pytest

from headrank.cli import main

pytestmark = pytest.mark.slow


def test_icr_on_three_dl19_queries(data_dir, tmp_path):
    assert (
        main(
            [
                "eval",
                "--data-dir",
                str(data_dir),
                "--dataset",
                "dl19",
                "--method",
                "icr",
                "--model",
                "embedded",
                "--top-k",
                "20",
                "--limit",
                "3",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["queries"] == 3 and metrics["layers_run"] == 30
    assert 0.0 < metrics["ndcg@10"] <= 1.0


def test_committed_headrank_on_three_dl19_queries(data_dir, tmp_path):
    assert (
        main(
            [
                "eval",
                "--data-dir",
                str(data_dir),
                "--dataset",
                "dl19",
                "--method",
                "headrank",
                "--limit",
                "3",
                "--out",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["queries"] == 3 and metrics["layers_run"] < 30 and metrics["trained_on"] == ["dl21"]
