"""`headrank reproduce`: the paper's protocol for one model in one resumable command. Heads are selected on the
training queries (QRHead's too, from the same head table), trained with the given recipe, and every benchmark of
the registry that is present (or downloadable) is evaluated with BM25, ICR, QRHead, the untrained selected heads
and the trained HeadRank, compared with paired tests, into one table. Each step is the CLI command a user would
type, and its output is kept: a step whose output exists is not run again."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from headrank.data import DataError, load_run, scored
from headrank.datasets import DATASETS, download_dataset, load_dataset, spec
from headrank.engine import defaults
from headrank.evaluation.metrics import format_table, machine

TRAINING_DATASETS = ("dl21", "dl22", "dl23")
"""the paper's 211 training queries are TREC DL21-23 (53 + 76 + 82)."""
METHODS = ("bm25", "icr", "qrhead", "selected", "headrank")
COMPARISONS = (("headrank", "bm25"), ("headrank", "selected"), ("headrank", "icr"), ("headrank", "qrhead"))
"""(system, baseline) pairs with a paired randomization test in the table."""


@dataclass(frozen=True)
class ReproduceConfig:
    model: str
    data_dir: Path
    out: Path
    train_datasets: tuple[str, ...] = TRAINING_DATASETS
    eval_datasets: tuple[str, ...] = ()
    """empty: every registry benchmark that is not training data."""
    device: str = defaults.DEVICE
    dtype: str = defaults.DTYPE
    limit: int | None = None
    """judged training queries per dataset (None: all)."""
    eval_limit: int | None = None
    top_k: int = 20
    k: int = 16
    max_depth: int | None = None
    validation: float = 0.2
    train_args: tuple[str, ...] = ()
    """the recipe: more `headrank train` flags (e.g. --epochs 4 --lr 3e-3 --kl 1)."""
    download: bool = True


def reproduce(config: ReproduceConfig, cli: Callable[[list[str]], int], say=print) -> Path:
    """Run (or resume) the protocol; returns the table's markdown path. `cli` runs one `headrank` command (the
    CLI's `main`, which calls this: passed in, not imported)."""
    out, data = Path(config.out), str(config.data_dir)
    model = ["--model", config.model, "--device", config.device, "--dtype", config.dtype]
    train = [name for name in config.train_datasets if _present(name, config, say)]
    if not train:
        raise DataError(f"none of the training datasets {', '.join(config.train_datasets)} is there or downloadable")
    limit = ["--limit", str(config.limit)] if config.limit else []
    datasets = [arg for name in train for arg in ("--dataset", name)]
    common = ["--data-dir", data, *datasets, *limit, "--validation", str(config.validation)]

    heads, qrhead = out / "heads" / "heads.json", out / "qrhead" / "heads.json"
    depth = ["--max-depth", str(config.max_depth)] if config.max_depth else []
    _step(cli, heads, say, ["select-heads", *model, *common, "--k", str(config.k), *depth, "--out", str(heads.parent)])
    if not qrhead.is_file():  # QRHead: the same head table, chosen by nDCG alone (lambda 0)
        qrhead.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(heads.parent / "head_table.npz", qrhead.parent / "head_table.npz")
    reuse = ["select-heads", *model, *common, "--k", str(config.k), "--lam", "0", *depth, "--reuse"]
    _step(cli, qrhead, say, [*reuse, "--out", str(qrhead.parent)])
    artifact = out / "artifact"
    resume = ["--resume"] if (artifact / "checkpoints" / "last").is_dir() else []
    train_argv = ["train", *model, "--heads", str(heads), *common, "--cache-dir", str(out / "prefix-cache")]
    _step(cli, artifact / "headrank.json", say, [*train_argv, *config.train_args, "--out", str(artifact), *resume])

    benchmarks = config.eval_datasets or tuple(n for n in DATASETS if n not in train and not n.endswith("-train"))
    rows, skipped = [], {}
    for name in benchmarks:
        if not _present(name, config, say):
            skipped[name] = "not in the data directory and not downloadable here"
            continue
        for method in METHODS:
            extra = {
                "bm25": [],
                "icr": model,
                "qrhead": [*model, "--heads", str(qrhead)],
                "selected": [*model, "--heads", str(heads)],
                "headrank": ["--artifact", str(artifact), "--device", config.device, "--dtype", config.dtype],
            }[method]
            folder = out / "eval" / name / method
            argv = ["eval", "--data-dir", data, "--dataset", name, "--method", method, *extra]
            argv += ["--top-k", str(config.top_k), "--out", str(folder), "--quiet"]
            _step(
                cli,
                folder / "metrics.json",
                say,
                [*argv, *(["--limit", str(config.eval_limit)] if config.eval_limit else [])],
            )
        rows += _rows(name, out / "eval" / name, config.data_dir)
    return _write_table(out, config, train, rows, skipped)


def _present(name: str, config: ReproduceConfig, say) -> bool:
    """The dataset is in the data directory, or was just downloaded into it."""
    try:
        load_dataset(name, Path(config.data_dir))
        return True
    except DataError as missing:
        if not (config.download and spec(name).sources):
            say(f"skip {name}: {missing}")
            return False
    try:
        download_dataset(name, Path(config.data_dir))
        return True
    except Exception as err:  # any network failure: skip the set and say why
        say(f"skip {name}: not here and the download failed ({err})")
        return False


def _step(cli, output: Path, say, argv: list[str]) -> None:
    if output.is_file():
        say(f"kept {output}")
        return
    say("headrank " + " ".join(argv))
    if cli(argv) != 0:
        raise RuntimeError(f"step failed: headrank {' '.join(argv)}")


def _rows(name: str, folder: Path, data_dir: Path) -> list[dict]:
    from headrank.evaluation.significance import compare_runs

    qrels = load_dataset(name, Path(data_dir)).qrels
    metrics = {m: json.loads((folder / m / "metrics.json").read_text()) for m in METHODS}
    runs = {m: scored(load_run(folder / m / "run.trec")) for m in METHODS}
    tests = {(system, base): compare_runs(runs[base], {system: runs[system]}, qrels)[0] for system, base in COMPARISONS}
    rows = []
    for method in METHODS:
        row = {
            "dataset": name,
            "method": method,
            "queries": metrics[method]["queries"],
            "ndcg@10": metrics[method]["ndcg@10"],
            "seconds_per_query": metrics[method]["seconds_per_query"],
        }
        for (system, base), test in tests.items():
            if system == method:
                row[f"p vs {base}"] = test.p_value
        rows.append(row)
    return rows


def _write_table(out: Path, config: ReproduceConfig, train: Sequence[str], rows: list[dict], skipped: dict) -> Path:
    columns = ["dataset", "method", "queries", "ndcg@10", "seconds_per_query"]
    columns += [f"p vs {base}" for _, base in COMPARISONS]
    record = {
        "model": config.model,
        "trained_on": list(train),
        "machine": machine(),
        "rows": rows,
        "skipped": skipped,
        "train_args": list(config.train_args),
    }
    (out / "table.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [
        f"# headrank reproduce: {config.model}",
        "",
        f"Heads selected and trained on {', '.join(train)}; top-{config.top_k} reranked; machine: {record['machine']}.",
        "p: paired randomization test on nDCG@10 (`headrank compare`).",
        "",
        format_table(rows, columns) if rows else "(no benchmark present)",
    ]
    lines += [f"\nskipped {name}: {why}" for name, why in skipped.items()]
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    return path
