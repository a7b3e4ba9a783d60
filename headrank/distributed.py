"""Batch reranking on Ray Data: an actor per worker loads the ranker once and reranks the queries sent to it.

Each query is one row (its top-k passages and the docids below them); `map_batches` hands rows to a fixed
pool of actors; the results come back in input order and are written, as they arrive, to a TREC run and a
parquet table. Reranking a query is `experiment.rerank_lists`, as in `headrank rerank`, so the run file is
the single-process one. The candidates are read on the driver; the model work is spread over the cluster."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from headrank.data import Candidate, CandidateList, RankedRun, run_lines
from headrank.ranker import HeadRanker

RankerFactory = Callable[[], HeadRanker]
"""Builds the ranker inside each worker, e.g. functools.partial(HeadRanker.from_pretrained, "embedded")."""


@dataclass(frozen=True)
class RayOptions:
    workers: int = 2
    """actors, each holding one copy of the model."""
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 4
    """queries per actor call."""
    address: str | None = None
    """an existing cluster ('auto', 'ray://host:10001', ...); None starts Ray on this machine."""

    def __post_init__(self):
        if self.workers < 1 or self.batch_size < 1:
            raise ValueError(f"workers and batch_size must be at least 1, got {self.workers} and {self.batch_size}")
        if self.cpus_per_worker < 0 or self.gpus_per_worker < 0:
            raise ValueError("cpus_per_worker and gpus_per_worker cannot be negative")


def _query_rows(lists: Sequence[CandidateList], top_k: int) -> list[dict]:
    """One row per query: only the top-k passages travel; the docids below keep their order."""
    return [
        {
            "qid": lst.qid,
            "query": lst.query,
            "docids": lst.docids(),
            "texts": [c.text for c in lst.candidates[:top_k]],
            "titles": [c.title or "" for c in lst.candidates[:top_k]],
        }
        for lst in lists
    ]


class Reranker:
    """The Ray Data actor: loads the ranker once, then reranks batches of query rows."""

    def __init__(self, load: RankerFactory, top_k: int):
        self.ranker = load()
        self.top_k = top_k

    def __call__(self, batch):
        import pyarrow as pa

        from headrank.evaluation.experiment import rerank_lists

        lists = []
        for row in batch.to_pylist():
            head = [Candidate(d, t, title or None) for d, t, title in zip(row["docids"], row["texts"], row["titles"])]
            tail = [Candidate(d, "") for d in row["docids"][len(head) :]]
            lists.append(CandidateList(row["qid"], row["query"], head + tail))
        run, _ = rerank_lists(self.ranker, lists, self.top_k, progress=False)
        return pa.table(
            {
                "qid": [lst.qid for lst in lists],
                "docids": [[d for d, _ in run[lst.qid]] for lst in lists],
                "scores": [[s for _, s in run[lst.qid]] for lst in lists],
            }
        )


def connect(options: RayOptions) -> None:
    """Join the cluster at `options.address`, or start Ray here with this machine's CPUs."""
    import ray

    if ray.is_initialized():
        return
    if options.address:
        ray.init(address=options.address, logging_level="warning")
        return
    cpus = os.cpu_count() or 1
    if options.workers * options.cpus_per_worker > cpus:
        raise ValueError(
            f"{options.workers} workers x {options.cpus_per_worker} CPUs need more than the {cpus} CPUs here: "
            "lower --workers or --cpus-per-worker, or give --address of a cluster"
        )
    ray.init(num_cpus=cpus, logging_level="warning", include_dashboard=False)


def rerank_dataset(lists: Sequence[CandidateList], load: RankerFactory, top_k: int, options: RayOptions):
    """A lazy Ray dataset of (qid, docids, scores) rows, one per query, in input order (this sets
    `preserve_order` on the current Ray DataContext)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    rows = _query_rows(lists, top_k)
    blocks = max(1, min(len(rows), options.workers * 4))
    return ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        Reranker,
        fn_constructor_args=(load, top_k),
        compute=ray.data.ActorPoolStrategy(size=options.workers),
        batch_size=options.batch_size,
        batch_format="pyarrow",
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker,
    )


def iter_runs(dataset, batch_size: int = 256) -> Iterator[RankedRun]:
    """The reranked dataset as consecutive pieces of a run (qid -> (docid, score) best first), in input order."""
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=batch_size):
        yield {row["qid"]: list(zip(row["docids"], row["scores"])) for row in batch.to_pylist()}


def _flat_table(run: RankedRun, schema):
    import pyarrow as pa

    rows = [(qid, docid, rank, score) for qid, ranked in run.items() for rank, (docid, score) in enumerate(ranked, 1)]
    return pa.table({name: [r[i] for r in rows] for i, name in enumerate(schema.names)}, schema=schema)


def rerank_distributed(
    lists: Sequence[CandidateList],
    load: RankerFactory,
    out: str | Path,
    top_k: int = 20,
    options: RayOptions | None = None,
    tag: str = "headrank",
    progress: bool = False,
) -> Path:
    """Rerank on Ray and write `out` (TREC run) and `out` with suffix .parquet (qid, docid, rank, score).

    Returns the parquet path. Ray is started (or joined) here unless it is already running."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    out = Path(out)
    if out.suffix == ".parquet":
        raise ValueError(f"{out}: give the TREC run's path; the parquet table is written beside it")
    options = options or RayOptions()
    connect(options)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    out.parent.mkdir(parents=True, exist_ok=True)
    table_path = out.with_suffix(".parquet")
    schema = pa.schema([("qid", pa.string()), ("docid", pa.string()), ("rank", pa.int32()), ("score", pa.float64())])
    with out.open("w") as trec, pq.ParquetWriter(table_path, schema) as table:
        for run in iter_runs(rerank_dataset(lists, load, top_k, options)):
            trec.writelines(run_lines(run, tag))
            table.write_table(_flat_table(run, schema))
    return table_path
