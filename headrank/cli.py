"""`headrank` command line: a thin shell over HeadRanker and the experiment helpers."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from headrank.engine import defaults
from headrank.engine.precision import DTYPE_CHOICES
from headrank.methods import METHODS
from headrank.options import add_model_options, config_options, given_dests


def _reference_ranker(args, heads: str):
    from headrank.methods import reference_ranker
    from headrank.options import RankerOptions

    return reference_ranker(RankerOptions.from_args(args), heads)


def _checked_plan(args, method: str | None = None):
    """The reranker the flags name (`method`, or for rerank, serve and rerank-distributed the one
    `methods.method_for` picks), with everything refused that can be before a weight is read."""
    from headrank.methods import check_plan, method_for, plan_method
    from headrank.options import RankerOptions

    options = RankerOptions.from_args(args)
    plan = plan_method(method or method_for(options), options)
    check_plan(plan)
    return plan


def _check_output(path: str | Path) -> None:
    """An output that cannot be written is refused before the model loads, not after the work is done."""
    path = Path(path)
    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("."))
    if path.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise OSError(f"cannot write {path}: " + ("it is a folder" if path.is_dir() else f"{parent} is not writable"))


def cmd_rerank(args) -> None:
    from headrank.data import load_candidates, write_run
    from headrank.evaluation.experiment import rerank_lists
    from headrank.methods import load_plan

    plan = _checked_plan(args)
    _check_output(args.out)
    lists = load_candidates(args.candidates, args.queries, args.corpus)
    run, clock = rerank_lists(load_plan(plan), lists, args.top_k, progress=not args.quiet)
    write_run(args.out, run, tag=args.tag)
    print(f"reranked {len(lists)} queries in {clock.seconds:.1f} s ({clock.per_item:.2f} s/query) -> {args.out}")


def cmd_eval(args) -> None:
    from headrank.data import default_data_dir
    from headrank.datasets import load_dataset
    from headrank.evaluation.experiment import evaluate_method, summary
    from headrank.methods import load_plan

    plan = _checked_plan(args, args.method)  # no --method: the one rerank would use (a model's shipped heads)
    data = load_dataset(args.dataset, default_data_dir(args.data_dir))  # a missing dataset: before the model
    result = evaluate_method(
        load_plan(plan),
        plan.method,
        data,
        args.top_k,
        args.limit,
        Path(args.out),
        progress=not args.quiet,
    )
    print(summary(result.metrics))
    print(f"wrote {Path(args.out) / 'run.trec'} and {Path(args.out) / 'metrics.json'}")


def cmd_select_heads(args) -> None:
    from headrank.data import default_data_dir
    from headrank.heads.selection import HeadTable, SelectionSpec, collect_tables, select_and_save, within_depth

    out = Path(args.out)
    table_path = out / "head_table.npz"
    data_dir = default_data_dir(args.data_dir)
    if args.reuse and table_path.is_file():
        table = HeadTable.load(table_path)
    else:
        ranker = within_depth(_reference_ranker(args, "all"), args.max_depth)  # only the layers it may choose in
        table = collect_tables(ranker, args.dataset, data_dir, args.top_k, args.limit, progress=not args.quiet)
        out.mkdir(parents=True, exist_ok=True)
        table.save(table_path)
    spec = SelectionSpec(args.k, args.lam, args.measure, args.max_depth, args.validation, args.seed)
    chosen, train, held = select_and_save(table, spec, out, data_dir, args.limit, args.top_k, args.dataset)
    print(
        f"selected {len(chosen.heads)} heads on {len(train.qids)} queries ({held} held out for validation), "
        f"truncation depth {chosen.depth}: {chosen.describe()}"
    )
    print(f"wrote {out / 'heads.json'}, head_stats.csv/json and heatmaps in {out}")


def cmd_train(args) -> None:
    from headrank.artifact import NO_ADAPTER, read_manifest
    from headrank.data import default_data_dir
    from headrank.heads.headset import selection_of
    from headrank.training import TrainConfig, train_artifact

    if args.heads in (None, "all"):
        raise ValueError("train needs --heads: a head-set file from `headrank select-heads`")
    fields = {name: getattr(args, _train_dest(name)) for name in _TRAIN_FIELDS}
    config = TrainConfig(**fields, lora_alpha=2 * args.lora_rank, standardise=not args.raw_scores)
    folder = train_artifact(
        _reference_ranker(args, args.heads),
        config,
        default_data_dir(args.data_dir),
        args.dataset,
        Path(args.out),
        limit=args.limit,
        resume=args.resume,
        progress=not args.quiet,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        selection=selection_of(args.heads),
    )
    if read_manifest(folder)["adapters"] == NO_ADAPTER:
        print("no training step beat the untrained heads on validation: the artifact holds the heads, no adapter")
    print(f"wrote the trained ranker to {folder} (load it with HeadRanker.from_pretrained('{folder}'))")
    print(f"learning curves: {folder / 'learning_curves.png'}")


_TRAIN_FIELDS = {
    "loss": "",  # from the objectives table (training/objectives.py)
    "beta": "preference sharpness, in units of the list's reference score spread",
    "gamma": "entropy weight",
    "eta": "middle-zone variance weight",
    "tau": "softmax temperature of the entropy term",
    "kl": "weight of KL(reference || trained) over the whole list's score distribution (0: off)",
    "lora_dropout": "dropout on the LoRA path while training",
    "weight_decay": "AdamW weight decay of the LoRA weights (towards the frozen base)",
    "patience": "stop after this many curve points without a better validation nDCG@10 (0: never)",
    "lr": "peak learning rate",
    "warmup": "share of steps with a linear warm-up (then linear decay to 0)",
    "epochs": "passes over the training lists",
    "lists_per_step": "lists accumulated into one optimizer step",
    "list_size": "candidates per training list",
    "max_pairs": "preference pairs per list",
    "pairs": "ALPS or the random-pair ablation",
    "adapters": "query: LoRA on the query span (prefix cached); all: on every token, passages too",
    "order": "input order while training: random shuffles, or the ranker's inference order",
    "shuffles": "distinct shuffles per list for --order random",
    "lora_rank": "LoRA rank (alpha = 2 x rank)",
    "eval_every": "optimizer steps between learning-curve points (and checkpoints)",
    "train_sample": "training lists scored for the training curve",
    "validation": "share of each dataset's queries held out for validation",
    "cache_dtype": "dtype of the cached frozen prefixes",
    "seed": "seed of the split, orders and pair sampling",
}


def _train_dest(name: str) -> str:
    """`order` is the model's inference order already: the training order is --train-order."""
    return "train_order" if name == "order" else name


def _train_options(p: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field: its type, default and choices come from there."""
    from headrank.training import config as training_config
    from headrank.training.objectives import OBJECTIVES

    choices = training_config.CHOICES | {"loss": tuple(OBJECTIVES)}
    helps = _TRAIN_FIELDS | {"loss": "; ".join(o.help for o in OBJECTIVES.values())}
    config_options(p, training_config.TrainConfig(), helps, choices, _train_dest)


def cmd_retrieve(args) -> None:
    from headrank.baselines.bm25 import CONFIG_FILE, BM25Retriever, write_retrieved
    from headrank.data import load_corpus, load_qrels, load_queries, scored
    from headrank.evaluation.metrics import evaluate

    corpus = load_corpus(args.corpus)
    if args.index and (Path(args.index) / CONFIG_FILE).is_file():
        retriever = BM25Retriever.load(args.index)
    else:
        retriever = BM25Retriever.build(corpus)
        if args.index:
            retriever.save(args.index)
    queries = load_queries(args.queries)
    run = retriever.search(queries, args.k)
    write_retrieved(args.out, run, queries, corpus)
    print(f"retrieved the top {args.k} of {len(corpus)} documents for {len(queries)} queries -> {args.out}")
    if args.qrels:
        qrels = load_qrels(args.qrels)
        print(evaluate(scored(run), qrels, ["nDCG@10", "R@100"]))


def _qrels(args):
    """--qrels FILE, else the qrels of --dataset under --data-dir."""
    from headrank.data import default_data_dir, load_qrels
    from headrank.datasets import load_dataset

    return load_qrels(args.qrels) if args.qrels else load_dataset(args.dataset, default_data_dir(args.data_dir)).qrels


def _load_run_arg(path: str) -> dict[str, dict[str, float]]:
    """An eval output folder (its run.trec) or a TREC run file, as ir-measures wants it."""
    from headrank.data import DataError, load_run, scored

    run_path = Path(path) / "run.trec" if Path(path).is_dir() else Path(path)
    if not run_path.is_file():
        raise DataError(f"no TREC run at {run_path}")
    return scored(load_run(run_path))


def cmd_compare(args) -> None:
    from dataclasses import asdict

    from headrank.evaluation.metrics import format_table
    from headrank.evaluation.significance import compare_runs

    qids = Path(args.qids).read_text().split() if args.qids else None
    runs = {s: _load_run_arg(s) for s in args.systems}
    rows = compare_runs(_load_run_arg(args.baseline), runs, _qrels(args), args.measure, qids=qids)
    table = [asdict(r) | {"delta": r.delta} for r in rows]
    print(f"baseline: {args.baseline} ({args.measure} {rows[0].baseline_mean:.4f}, {rows[0].queries} queries)")
    print(format_table(table, ["system", "mean", "delta", "wins", "losses", "ties", "p_value"]))
    if args.out:
        Path(args.out).write_text(json.dumps({"baseline": args.baseline, "rows": table}, indent=1) + "\n")


def cmd_analyze(args) -> None:
    from dataclasses import asdict

    from headrank.evaluation.analysis import plot_positions, zone_report
    from headrank.evaluation.metrics import format_table

    qrels = _qrels(args)
    reports = [zone_report(Path(d), qrels, args.relevant_grade) for d in args.runs]
    if len({r.label for r in reports}) < len(reports):  # e.g. several trained artifacts: name them by folder
        for report, folder in zip(reports, args.runs):
            report.label = folder
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "middle_zone.json").write_text(json.dumps([asdict(r) for r in reports], indent=1) + "\n")
    plot_positions(reports, out / "score_by_position.png")
    columns = [
        "label",
        "queries",
        "selectivity_gap",
        "top_quartile_relevant_middle",
        "top_quartile_irrelevant_middle",
        "middle_variance",
        "middle_variance_raw",
        "first_stage_tau",
    ]
    print(format_table([asdict(r) for r in reports], columns))
    print(f"wrote {out / 'middle_zone.json'} and {out / 'score_by_position.png'}")


def _labelled_data_options(parser: argparse.ArgumentParser, heads: bool) -> None:
    """A model and the labelled datasets it learns from: what select-heads and train share."""
    add_model_options(parser, heads=heads, truncate=heads)
    parser.add_argument("--data-dir")
    parser.add_argument(
        "--dataset", action="append", default=None, help="training dataset(s), repeatable (default dl21)"
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N judged queries of each dataset")


def _candidate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--candidates", required=True, help="jsonl(.gz) or parquet candidates, or a TREC run with --queries/--corpus"
    )
    parser.add_argument("--queries", help="queries file, to join a TREC run")
    parser.add_argument("--corpus", help="BEIR corpus jsonl(.gz), to join a TREC run")
    parser.add_argument("--out", required=True)
    parser.add_argument("--top-k", type=int, default=20, help="rerank this many; the rest keep their order below")
    parser.add_argument("--tag", default="headrank")


def cmd_serve(args) -> None:
    from headrank.methods import load_plan
    from headrank.serve.auth import load_keys
    from headrank.serve.config import ServeConfig
    from headrank.serve.runner import bind, serve

    if not 0 <= args.port <= 65535:  # refused before the model loads, not by the socket after it
        raise ValueError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    plan = _checked_plan(args)
    config = ServeConfig(
        model_name=args.name or Path(plan.kwargs.get("folder") or plan.kwargs["model"]).name,
        **{name: getattr(args, name) for name in _SERVE_FIELDS},
        api_keys=load_keys(args.api_key, args.api_key_file),
        cors_origins=tuple(args.cors_origin),
    )
    sock = bind(args.host, args.port)  # a port in use is refused now, not after the model has loaded
    serve(load_plan(plan), args.host, args.port, config, sock=sock)


def cmd_rerank_distributed(args) -> None:
    from functools import partial

    from headrank.data import load_candidates
    from headrank.distributed import RayOptions, rerank_distributed
    from headrank.evaluation.metrics import Stopwatch
    from headrank.methods import load_plan

    options = RayOptions(
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker
        if args.gpus_per_worker is not None
        else (1.0 if args.device.startswith("cuda") else 0.0),
        batch_size=args.batch_size,
        address=args.address,
    )
    plan = _checked_plan(args)  # a flag that cannot apply fails here, not in every worker
    _check_output(args.out)
    lists = load_candidates(args.candidates, args.queries, args.corpus)
    with Stopwatch() as clock:
        table = rerank_distributed(
            lists, partial(load_plan, plan), args.out, args.top_k, options, args.tag, progress=not args.quiet
        )
    print(f"reranked {len(lists)} queries on Ray in {clock.seconds:.1f} s -> {args.out} and {table}")


def cmd_reproduce(args) -> None:
    import shlex

    from headrank.data import default_data_dir
    from headrank.evaluation.reproduce import TRAINING_DATASETS, ReproduceConfig, reproduce

    config = ReproduceConfig(
        model=args.model,
        data_dir=default_data_dir(args.data_dir),
        out=Path(args.out or Path("runs") / "reproduce" / Path(args.model).name),
        train_datasets=tuple(args.train_dataset or TRAINING_DATASETS),
        eval_datasets=tuple(args.eval_dataset or ()),
        device=args.device,
        dtype=args.dtype,
        limit=args.limit,
        eval_limit=args.eval_limit,
        top_k=args.top_k,
        k=args.k,
        max_depth=args.max_depth,
        validation=args.validation,
        train_args=tuple(shlex.split(args.train_args)),
        download=not args.offline,
    )
    table = reproduce(config, main)
    print(table.read_text())
    print(f"wrote {table} and {table.with_suffix('.json')}")


def cmd_download(args) -> None:
    from headrank.data import default_data_dir
    from headrank.datasets import download_dataset

    data_dir = Path(args.data_dir or os.environ.get("HEADRANK_DATA") or ".")
    data_dir.mkdir(parents=True, exist_ok=True)
    print(download_dataset(args.dataset, default_data_dir(data_dir), args.base_url))


def _command(sub, name: str, func, help: str, quiet: bool = False) -> argparse.ArgumentParser:
    """One command's parser, bound to the function that runs it; `quiet` for commands that load a model."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(func=func)
    if quiet:
        p.add_argument("--quiet", action="store_true", help="print nothing but errors and the command's result")
    return p


def _rerank_parser(sub) -> None:
    p = _command(sub, "rerank", cmd_rerank, "rerank candidate lists into a TREC run", quiet=True)
    add_model_options(p, artifact=True)
    _candidate_options(p)


def _eval_parser(sub) -> None:
    p = _command(sub, "eval", cmd_eval, "rerank a benchmark and write run.trec + metrics.json", quiet=True)
    add_model_options(p, artifact=True)
    p.add_argument("--data-dir", help="folder with the datasets (default: $HEADRANK_DATA)")
    p.add_argument("--dataset", default="dl19")
    p.add_argument(
        "--method",
        choices=list(METHODS),
        help="; ".join(f"{name}: {what}" for name, what in METHODS.items())
        + " (default: as rerank chooses: headrank for the embedded model, a model's shipped heads, else icr)",
    )
    p.add_argument("--dense-model", help="sentence-transformers model for --method dense (default: embedded MiniLM)")
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--limit", type=int, default=None, help="only the first N judged queries")
    p.add_argument("--out", required=True)


def _select_heads_parser(sub) -> None:
    p = _command(
        sub,
        "select-heads",
        cmd_select_heads,
        "head statistics on labelled lists and entropy-regularized selection",
        quiet=True,
    )
    _labelled_data_options(p, heads=False)
    p.add_argument("--top-k", type=int, default=20, help="candidates per list")
    p.add_argument("--k", type=int, default=16, help="heads to keep")
    p.add_argument("--lam", type=float, default=0.5, help="entropy weight lambda in D - lambda*H (0: QRHead)")
    p.add_argument("--measure", default="ndcg", choices=["ndcg", "pair_accuracy"], help="discriminability D")
    p.add_argument("--max-depth", type=int, default=None, help="choose heads only in the first N layers (N layers run)")
    p.add_argument(
        "--validation",
        type=float,
        default=0.2,
        help="share of each dataset's queries held out, the same ones `headrank train` holds out (0: use all)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split (as train's --seed)")
    p.add_argument("--reuse", action="store_true", help="reuse OUT/head_table.npz instead of running the model")
    p.add_argument("--out", required=True)


def _train_parser(sub) -> None:
    p = _command(
        sub, "train", cmd_train, "preference-align the selected heads (LoRA) and write a trained artifact", quiet=True
    )
    _labelled_data_options(p, heads=True)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in OUT/checkpoints")
    p.add_argument("--cache-dir", help="keep the frozen prefixes here (shared by runs on the same base and depth)")
    _train_options(p)
    p.add_argument("--raw-scores", action="store_true", help="beta and margins in raw score units (not standardised)")


def _retrieve_parser(sub) -> None:
    p = _command(sub, "retrieve", cmd_retrieve, "BM25 (bm25s) top-k candidates from a corpus, to rerank")
    p.add_argument("--corpus", required=True, help="BEIR corpus jsonl(.gz): {_id, title, text}")
    p.add_argument("--queries", required=True, help="queries file (jsonl, TSV or TREC topics)")
    p.add_argument("--out", required=True, help="candidates .jsonl(.gz) with text, or any other name for a TREC run")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--index", help="index folder: loaded if it holds an index, else built and saved there")
    p.add_argument("--qrels", help="also print nDCG@10 and R@100 against these judgements")


def _analyze_parser(sub) -> None:
    p = _command(sub, "analyze", cmd_analyze, "middle-zone selectivity and score-by-position plots from eval outputs")
    p.add_argument("runs", nargs="+", help="output folders of `headrank eval` (with scores.jsonl)")
    p.add_argument("--data-dir")
    p.add_argument("--dataset", default="dl19", help="whose qrels to judge with")
    p.add_argument("--qrels", help="a qrels file (TREC or BEIR tsv) instead of --dataset")
    p.add_argument("--relevant-grade", type=int, default=2, help="lowest grade counted as relevant (DL: 2)")
    p.add_argument("--out", required=True)


def _compare_parser(sub) -> None:
    p = _command(
        sub, "compare", cmd_compare, "per-query wins/losses/ties and a paired randomization test against a baseline"
    )
    p.add_argument("baseline", help="eval output folder (with run.trec) or a TREC run file")
    p.add_argument("systems", nargs="+", help="eval output folders or TREC run files to compare with it")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--dataset", help="judge with this dataset's qrels (with --data-dir)")
    group.add_argument("--qrels", help="a qrels file (TREC or BEIR tsv)")
    p.add_argument("--data-dir")
    p.add_argument("--measure", default="nDCG@10", help="an ir-measures name")
    p.add_argument("--qids", help="a file of query ids (whitespace-separated): compare on those only")
    p.add_argument("--out", help="also write the comparison as json")


_SERVE_FIELDS = {
    "max_documents": "documents per request",
    "max_body_bytes": "bytes per request body (decoded, for a gzip body)",
    "queue_size": "waiting requests before 429",
    "max_active": "requests whose prompts the worker batches together",
    "max_batch_requests": "requests whose prompts may share one forward pass",
    "shutdown_grace": "seconds in-flight requests get after SIGTERM; those still running are answered 503",
    "max_query_tokens": "a longer query is cut to this many tokens (TEI's truncate: false gets 422 instead)",
    "metrics_need_key": "/metrics needs the key too (default: open)",
}
"""the ServeConfig fields that are flags of `headrank serve`, with their help; type and default are the field's."""


def _serve_parser(sub) -> None:
    from headrank.serve.config import ServeConfig

    p = _command(
        sub, "serve", cmd_serve, "serve the reranker over HTTP (Cohere /v1/rerank and /v2/rerank, Jina, TEI /rerank)"
    )
    add_model_options(p, artifact=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", help="model name in the answers (default: the model's)")
    config_options(p, ServeConfig(), _SERVE_FIELDS)
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="require 'Authorization: Bearer KEY' (repeatable; or --api-key-file, or env HEADRANK_API_KEY, which "
        "keep the key out of the process list)",
    )
    p.add_argument("--api-key-file", help="a file of API keys, one per line (# comments and blank lines skipped)")
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="an origin whose browser pages may call the API, e.g. https://app.example.com (repeatable; * for any)",
    )


def _rerank_distributed_parser(sub) -> None:
    p = _command(
        sub,
        "rerank-distributed",
        cmd_rerank_distributed,
        "rerank candidate lists on Ray Data into a TREC run + parquet",
        quiet=True,
    )
    add_model_options(p, artifact=True)
    _candidate_options(p)
    p.add_argument("--workers", type=int, default=2, help="Ray actors, each with one copy of the model")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument(
        "--gpus-per-worker", type=float, default=None, help="GPUs per actor (default: 1 with --device cuda, else 0)"
    )
    p.add_argument("--batch-size", type=int, default=4, help="queries per actor call")
    p.add_argument("--address", help="an existing Ray cluster (default: start Ray on this machine)")


def _reproduce_parser(sub) -> None:
    p = _command(
        sub,
        "reproduce",
        cmd_reproduce,
        "the paper's protocol for one model: select, train, evaluate every benchmark, compare",
    )
    p.add_argument("--model", required=True, help="HF hub id, local folder, .gguf file, or 'embedded'")
    p.add_argument("--device", default=defaults.DEVICE)
    p.add_argument("--dtype", default=defaults.DTYPE, choices=DTYPE_CHOICES)
    p.add_argument("--data-dir")
    p.add_argument("--out", help="output folder, kept between runs (default: runs/reproduce/MODEL)")
    p.add_argument(
        "--train-dataset", action="append", help="training data, repeatable (default: dl21, dl22, dl23, the paper's)"
    )
    p.add_argument("--eval-dataset", action="append", help="benchmarks, repeatable (default: every other one present)")
    p.add_argument("--limit", type=int, help="judged training queries per dataset (default: all)")
    p.add_argument("--eval-limit", type=int, help="judged queries per benchmark (default: all)")
    p.add_argument("--top-k", type=int, default=20, help="candidates reranked (and per training list)")
    p.add_argument("--k", type=int, default=16, help="heads to select")
    p.add_argument("--max-depth", type=int, help="select heads in the first N layers only")
    p.add_argument("--validation", type=float, default=0.2, help="share of training queries held out")
    p.add_argument("--train-args", default="", help="the recipe, as more `headrank train` flags in one string")
    p.add_argument("--offline", action="store_true", help="never download: skip what is not in the data directory")


def _download_parser(sub) -> None:
    p = _command(sub, "download", cmd_download, "download a public dataset into the data directory")
    p.add_argument("dataset")
    p.add_argument("--data-dir")
    p.add_argument("--base-url", help="a mirror that serves the raw files by name")


COMMANDS = (
    _rerank_parser,
    _eval_parser,
    _select_heads_parser,
    _train_parser,
    _retrieve_parser,
    _analyze_parser,
    _compare_parser,
    _serve_parser,
    _rerank_distributed_parser,
    _reproduce_parser,
    _download_parser,
)
"""each command's parser, in the order `headrank --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headrank", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.given = given_dests(parser, argv)  # what was set on the command line: refused where it cannot apply
    if getattr(args, "dataset", "") is None:
        args.dataset = ["dl21"]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from headrank.data import DataError
    from headrank.engine.backbone import BackboneError, silenced
    from headrank.engine.prompt import PromptError
    from headrank.heads.headset import HeadSetError

    try:
        with silenced(getattr(args, "quiet", False)):
            args.func(args)
    except (BackboneError, DataError, HeadSetError, PromptError, ValueError, TypeError, OSError) as err:
        print(f"headrank: error: {err}", file=sys.stderr)  # after `silenced` has let stderr through again
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
