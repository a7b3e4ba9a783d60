"""What a new user meets in the first hour: naming the default model gives the default ranker, another model beside
an artifact is refused with what to do instead, and every refusal that needs no weights comes before any weight is
read (a GGUF converted, a model loaded)."""

from __future__ import annotations

import socket

import pytest

from headrank.artifact import DEFAULT_ARTIFACT
from headrank.cli import build_parser, main
from headrank.engine.testing import save_tiny
from headrank.methods import method_for, plan_method
from headrank.options import RankerOptions, given_dests

COMMANDS = {
    "rerank": ["rerank", "--candidates", "c.jsonl", "--out", "o"],
    "eval": ["eval", "--out", "o", "--method", "headrank"],
    "serve": ["serve"],
    "rerank-distributed": ["rerank-distributed", "--candidates", "c.jsonl", "--out", "o"],
}


def _plan(argv: list[str]):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = given_dests(parser, argv)
    options = RankerOptions.from_args(args)
    return plan_method(getattr(args, "method", None) or method_for(options), options)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def no_weights(monkeypatch):
    """Reading a weight fails the test: whatever is refused must be refused before."""
    import transformers

    import headrank.engine.gguf_cache

    def read(*args, **kwargs):
        raise AssertionError("a weight was read before the refusal")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", read)
    monkeypatch.setattr(headrank.engine.gguf_cache, "convert", read)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_naming_the_embedded_model_gives_the_default_ranker(command):
    plan = _plan([*COMMANDS[command], "--model", "embedded"])
    assert (plan.method, plan.loader, plan.kwargs["folder"]) == ("headrank", "artifact", str(DEFAULT_ARTIFACT))
    assert plan == _plan(COMMANDS[command])  # the same as saying nothing


def test_the_embedded_gguf_by_its_path_is_the_default_models_base_too():
    pytest.importorskip("gguf")
    from headrank.engine.backbone import embedded_gguf

    try:
        path = str(embedded_gguf())
    except ValueError as err:
        pytest.skip(str(err))
    assert _plan([*COMMANDS["rerank"], "--model", path]).kwargs["folder"] == str(DEFAULT_ARTIFACT)


@pytest.mark.parametrize("command", ["rerank", "eval"])
def test_another_model_beside_an_artifact_is_refused_with_what_to_do(command, tiny_folder, capsys):
    argv = [*COMMANDS[command], "--model", str(tiny_folder)]
    if command == "rerank":
        argv += ["--artifact", str(DEFAULT_ARTIFACT)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--model {tiny_folder} is not the base of" in err and "'embedded'" in err
    assert "--heads all" in err and "--artifact DIR" in err and f"headrank reproduce --model {tiny_folder}" in err


def test_a_head_the_model_lacks_is_refused_before_a_weight_is_read(tiny_folder, tmp_path, no_weights, capsys):
    argv = ["rerank", "--model", str(tiny_folder), "--heads", "9-0", "--candidates", "c.jsonl", "--out", "o"]
    assert main(argv) == 2
    assert "head 9-0 does not exist: the model has 4 layers of 4 heads" in capsys.readouterr().err


def test_a_gguf_is_not_converted_before_its_heads_are_checked(tmp_path, no_weights, monkeypatch, capsys):
    pytest.importorskip("gguf")
    from headrank.engine.backbone import embedded_gguf

    try:
        embedded_gguf()
    except ValueError as err:
        pytest.skip(str(err))
    monkeypatch.setenv("HEADRANK_CACHE", str(tmp_path / "cache"))  # a fresh cache: conversion would be next
    argv = ["rerank", "--model", "embedded", "--heads", "30-0", "--candidates", "c.jsonl", "--out", "o"]
    assert main(argv) == 2
    assert "head 30-0 does not exist: the model has 30 layers of 9 heads" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_outputs_data_and_devices_are_refused_before_the_model_loads(tiny_folder, tmp_path, no_weights, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    model = ["--model", str(tiny_folder), "--heads", "all"]
    cases = {
        "cannot write": ["rerank", *model, "--candidates", "c.jsonl", "--out", str(blocker / "run.trec")],
        "dl19: missing": ["eval", *model, "--method", "icr", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")],
        "no CUDA device": ["rerank", *model, "--device", "cuda", "--candidates", "c.jsonl", "--out", "o"],
    }
    import torch

    if torch.cuda.is_available():
        del cases["no CUDA device"]
    for message, argv in cases.items():
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_serve_refuses_a_port_in_use_before_the_model_loads(tiny_folder, no_weights, capsys):
    pytest.importorskip("fastapi")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--model", str(tiny_folder), "--heads", "all", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_quiet_prints_nothing_while_a_gguf_is_converted_and_used(tmp_path, monkeypatch, capfd):
    """--quiet: the result line on stdout and nothing on stderr, a first GGUF conversion included (transformers'
    GGUF loader printed its tensor bar whatever the flag said)."""
    pytest.importorskip("gguf")
    from headrank.data import Candidate, CandidateList, write_candidates
    from headrank.engine.testing import DOCS, FLEA_QUERY, save_tiny_gguf

    monkeypatch.setenv("HEADRANK_CACHE", str(tmp_path / "cache"))  # a fresh cache: the GGUF is converted here
    gguf = tmp_path / "tiny.gguf"
    save_tiny_gguf(gguf)
    candidates = tmp_path / "c.jsonl"
    write_candidates(candidates, [CandidateList("1", FLEA_QUERY, [Candidate(str(i), t) for i, t in enumerate(DOCS)])])
    capfd.readouterr()
    argv = ["rerank", "--model", str(gguf), "--heads", "all", "--candidates", str(candidates), "--out"]
    assert main([*argv, str(tmp_path / "run.trec"), "--quiet"]) == 0
    out, err = capfd.readouterr()
    assert err == "" and out.startswith("reranked 1 queries") and (tmp_path / "cache").is_dir()
    assert main([*argv, str(tmp_path / "again.trec")]) == 0  # not quiet: the same command says more
    assert capfd.readouterr().err != ""
