"""The console script end to end on the tiny model, and its error messages."""

from __future__ import annotations

import gzip
import json
import math

import pytest

from headrank.cli import main
from headrank.data import load_candidates, load_run
from headrank.engine import defaults
from headrank.engine.testing import save_tiny
from headrank.ranker import HeadRanker


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


def test_eval_without_method_uses_a_models_shipped_heads(tiny_folder, mini_data, tmp_path, monkeypatch):
    """`eval --model X` reranks as `rerank --model X` does: X's shipped heads, else all heads (ICR)."""
    from headrank.engine.backbone import model_fingerprint
    from headrank.heads import registry
    from headrank.heads.headset import HeadSet

    heads = tmp_path / "tiny-heads.json"
    HeadSet.of([(1, 0), (2, 3)]).save(heads)
    entry = registry.ShippedHeads("tiny", heads, frozenset({model_fingerprint(str(tiny_folder))}))
    monkeypatch.setattr(registry, "REGISTRY", (*registry.REGISTRY, entry))
    assert _eval(mini_data, "--model", tiny_folder, "--out", tmp_path / "shipped") == 0
    metrics = json.loads((tmp_path / "shipped" / "metrics.json").read_text())
    assert (metrics["method"], metrics["heads"], metrics["layers_run"]) == ("selected", "1-0,2-3", 3)
    monkeypatch.setattr(registry, "REGISTRY", registry.REGISTRY[:-1])
    assert _eval(mini_data, "--model", tiny_folder, "--out", tmp_path / "fallback") == 0
    metrics = json.loads((tmp_path / "fallback" / "metrics.json").read_text())
    assert (metrics["method"], metrics["heads"], metrics["layers_run"]) == ("icr", "all heads", 4)


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
    assert metrics["windows_per_query"] == metrics["prompts_per_query"] == 1  # two passages fit one window
    assert metrics["prompt_tokens_per_query"] > 0 and metrics["merge"] == defaults.MERGE == "sliding"
    assert (metrics["slide_size"], metrics["slide_step"]) == (defaults.SLIDE_SIZE, defaults.SLIDE_STEP)
    run = load_run(tmp_path / "icr" / "run.trec")
    assert set(run) == {"1", "2"}
    assert [d for d, _ in run["1"]][2] == "1-2"  # below top-k: first-stage order kept
    assert "ndcg@10" in capsys.readouterr().out


def test_eval_records_the_settings_of_its_merge(tiny_folder, mini_data, tmp_path):
    """Two runs of a split list that differ only in `--slide-step` must say so in metrics.json."""
    icr = ("--method", "icr", "--model", tiny_folder, "--top-k", 2)
    assert _eval(mini_data, *icr, "--slide-step", 15, "--out", tmp_path / "step") == 0
    metrics = json.loads((tmp_path / "step" / "metrics.json").read_text())
    assert (metrics["merge"], metrics["slide_size"], metrics["slide_step"]) == ("sliding", defaults.SLIDE_SIZE, 15)
    assert _eval(mini_data, *icr, "--merge", "tournament", "--out", tmp_path / "tournament") == 0
    metrics = json.loads((tmp_path / "tournament" / "metrics.json").read_text())
    assert metrics["merge"] == "tournament" and metrics["leaders"] is None and "slide_step" not in metrics


def test_rerank_writes_a_trec_run(tiny_folder, mini_data, tmp_path, capsys):
    out = tmp_path / "run.trec"
    candidates = mini_data / "dl19" / "candidates.bm25top100.jsonl.gz"
    assert _rerank(tiny_folder, "0-1,2-3", candidates, out) == 0
    assert "Loading weights" not in capsys.readouterr().err  # --quiet silences transformers' bars too
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
    assert metrics["heads_selected_on"] == ["dl21"] and metrics["layers_run"] <= 4
    assert metrics["trained_on"] == (None if manifest["adapters"] == "none" else ["dl21"])
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


# -- no silent flag: every option applies or is refused with its reason ---------------------------------------

MODEL_FLAG_VALUES = {  # flag -> (value on the command line, the loader argument it must reach, its value there)
    "--model": ("org/some-model", "model", "org/some-model"),
    "--heads": ("1-2", "heads", "1-2"),
    "--dense-model": ("org/dense", "model", "org/dense"),
    "--dtype": ("float32", "dtype", "float32"),
    "--device": ("cuda", "device", "cuda"),
    "--order": ("forward", "order", "forward"),
    "--no-calibration": (None, "calibrate", False),
    "--token-mask": (None, "token_mask", True),
    "--no-truncate": (None, "truncate", False),
    "--max-passage-tokens": ("64", "max_passage_tokens", 64),
    "--max-passage-words": ("50", "max_passage_words", 50),
    "--max-length": ("512", "max_length", 512),
    "--max-batch-tokens": ("4096", "max_batch_tokens", 4096),
    "--merge": ("scaled", "merge", "scaled"),
    "--slide-size": ("30", "slide_size", 30),
    "--slide-step": ("15", "slide_step", 15),
}


def _commands():
    """(name, argv without model flags, the method it loads) for every command that loads a reranker."""
    from headrank.methods import METHODS

    yield "rerank", ["rerank", "--candidates", "c.jsonl", "--out", "o"], None
    yield "rerank-heads", ["rerank", "--candidates", "c.jsonl", "--out", "o", "--heads", "3-1"], None
    yield "serve", ["serve"], None
    yield "rerank-distributed", ["rerank-distributed", "--candidates", "c.jsonl", "--out", "o"], None
    for method in METHODS:
        heads = ["--heads", "3-1"] if method in ("qrhead", "selected") else []
        yield f"eval-{method}", ["eval", "--out", "o", "--method", method, *heads], method
    yield "select-heads", ["select-heads", "--out", "o"], "icr"
    yield "train", ["train", "--out", "o", "--heads", "3-1"], "selected"


def _options_and_method(argv, method):
    from dataclasses import replace

    from headrank.cli import build_parser
    from headrank.methods import method_for
    from headrank.options import RankerOptions, given_dests

    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = given_dests(parser, argv)
    options = RankerOptions.from_args(args)
    if argv[0] == "select-heads":
        options = replace(options, heads="all")
    return options, method or method_for(options)


@pytest.mark.parametrize("name,base,method", list(_commands()), ids=[c[0] for c in _commands()])
def test_every_model_flag_reaches_the_loader_or_is_refused_with_its_reason(name, base, method):
    from headrank.artifact import DEFAULT_ARTIFACT
    from headrank.cli import build_parser
    from headrank.methods import plan_method

    sub = build_parser()._subparsers._group_actions[0].choices[base[0]]
    flags = {f for action in sub._actions for f in action.option_strings}
    values = dict(MODEL_FLAG_VALUES, **{"--artifact": (str(DEFAULT_ARTIFACT), "folder", str(DEFAULT_ARTIFACT))})
    checked = 0
    for flag, (value, key, expected) in values.items():
        if flag not in flags:
            continue
        argv = [*base, flag, *([] if value is None else [value])]
        options, chosen = _options_and_method(argv, method)
        try:
            plan = plan_method(chosen, options)
        except ValueError as err:
            named = [f for f in (flag, *base) if f.startswith("--") and f in str(err)]  # it, or one it conflicts with
            assert named and ":" in str(err), (argv, err)  # names the flag and says why
        else:
            assert plan.kwargs.get(key) == expected, (argv, plan)
        checked += 1
    assert checked >= 6


def test_flags_an_artifact_fixes_are_refused_and_say_why(capsys):
    for argv in (
        ["eval", "--out", "o", "--method", "headrank", "--heads", "3-1"],
        ["eval", "--out", "o", "--method", "headrank", "--order", "forward"],
        ["eval", "--out", "o", "--no-calibration"],
        ["rerank", "--candidates", "c.jsonl", "--out", "o", "--token-mask"],
        ["eval", "--out", "o", "--method", "bm25", "--max-batch-tokens", "8"],
        ["eval", "--out", "o", "--method", "dense", "--dtype", "float32"],
        ["eval", "--out", "o", "--method", "rankgpt", "--heads", "3-1"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "cannot apply to --method" in err and argv[-1 if argv[-1].startswith("--") else -2] in err


def test_a_trained_artifact_refuses_heads_and_prompt_settings_in_python():
    from headrank.artifact import DEFAULT_ARTIFACT

    with pytest.raises(ValueError, match="heads, order"):
        HeadRanker.from_pretrained(DEFAULT_ARTIFACT, heads="3-1", order="forward")
    with pytest.raises(TypeError, match=r"\['heads', 'order'\]"):  # from_artifact leaves only how lists run
        HeadRanker.from_artifact(DEFAULT_ARTIFACT, heads="3-1", order="forward", merge="tournament")


def test_every_option_of_every_command_is_read():
    """Model options are checked by the walk above; every other option must be read by its command (or be a field of
    train's TrainConfig or serve's ServeConfig)."""
    import inspect
    import re

    import headrank.cli as cli
    from headrank.options import FLAGS

    parser = cli.build_parser()
    assert "args.verbose" in inspect.getsource(cli.main)
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        source = inspect.getsource(sub._defaults["func"])
        for helper in set(re.findall(r"\b(_\w+)\(", source)):  # one level of the cli's own helpers
            if callable(getattr(cli, helper, None)):
                source += inspect.getsource(getattr(cli, helper))
        for action in sub._actions:
            dest = action.dest
            derived = {"train": set(map(cli._train_dest, cli._TRAIN_FIELDS)), "serve": set(cli._SERVE_FIELDS)}
            if dest in ("help", *FLAGS) or dest in derived.get(name, ()):
                continue  # a config field's flag is read by name (getattr) into its config
            assert f"args.{dest}" in source, f"headrank {name} {action.option_strings}: parsed and never read"


_LINES_GZ = gzip.compress(
    "".join(
        json.dumps({"qid": "1", "query": "q", "docid": str(i), "text": f"passage {i}"}) + "\n" for i in range(500)
    ).encode()
)
"""a gzip candidates file of 500 lines."""


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.jsonl", b"", "{path} holds no candidate lists"),
        ("c.jsonl", b"\n  \n", "{path} holds no candidate lists"),
        ("c.jsonl.gz", b"", "{path} holds no candidate lists"),
        ("c.jsonl.gz", gzip.compress(b""), "{path} holds no candidate lists"),
        ("c.jsonl.gz", _LINES_GZ[: len(_LINES_GZ) // 2], "{path} is truncated: its gzip stream ends early"),
        ("c.jsonl.gz", b'{"qid": "1"}', "{path} is not a gzip file"),
        ("c.jsonl", b'{"qid": "1", "query": "caf\xe9", "docid": "d", "text": "t"}\n', "{path} is not UTF-8 text"),
        ("missing.jsonl.gz", None, "file not found: {path}"),
    ],
    ids=["empty", "blank-lines", "empty-gz-file", "empty-gz-stream", "truncated-gz", "not-gz", "not-utf8", "missing"],
)
def test_unreadable_or_empty_candidates_are_a_one_line_error_and_write_nothing(
    tiny_folder, tmp_path, capsys, name, content, message
):
    candidates = tmp_path / name
    if content is not None:
        candidates.write_bytes(content)
    out = tmp_path / "run.trec"
    assert _rerank(tiny_folder, "0-1", candidates, out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"headrank: error: {message.format(path=candidates)}") and err.count("\n") == 1, err
    assert not out.exists()


def test_serve_refuses_a_port_out_of_range_before_loading_the_model(monkeypatch, capsys):
    pytest.importorskip("fastapi")
    import headrank.methods

    loaded = []
    monkeypatch.setattr(headrank.methods, "load_plan", lambda plan: loaded.append(plan))
    for port in ("70000", "-1"):
        assert main(["serve", "--port", port]) == 2
        err = capsys.readouterr().err
        assert err == f"headrank: error: --port must be in 0..65535 (0: any free port), got {port}\n"
    assert loaded == []
