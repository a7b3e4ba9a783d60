"""Rerank candidate lists and evaluate them: the work behind `headrank rerank` and `headrank eval`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from headrank.artifact import NO_ADAPTER
from headrank.data import CandidateList, RankedRun, run_from_ranking, scored, write_run
from headrank.datasets import Dataset
from headrank.evaluation.metrics import Stopwatch, evaluate, format_table, machine, peak_rss_mb
from headrank.ranker import HeadRanker
from headrank.results import RankedResults, Reranker


def describe_ranker(ranker: Reranker | None) -> dict:
    """The metrics.json fields about the ranker; a reranker other than HeadRanker may offer `run_info()`."""
    if ranker is None:
        return {"model": None, "heads": None, "layers_run": 0}
    if isinstance(ranker, HeadRanker):
        return {
            "model": ranker.backbone.source,
            "heads": ranker.config.heads.describe(),
            "layers_run": ranker.layer_calls(),
            "dtype": ranker.backbone.precision.dtype,
            "dtype_reason": ranker.backbone.precision.reason,
            "order": ranker.config.order,
            "max_length": ranker.max_length,
            **ranker.merge_plan().describe(),
            **_provenance(ranker.artifact),
        }
    info = getattr(ranker, "run_info", None)
    return info() if callable(info) else {}


def _provenance(artifact: dict | None) -> dict:
    """Where an artifact's heads were chosen and, if it ships an adapter, what trained it (an artifact whose
    training did not beat its untrained heads ships none: nothing trained it)."""
    if artifact is None:
        return {"heads_selected_on": None, "trained_on": None, "adapters": None}
    data = artifact.get("data", {})
    selection = data.get("heads_selection") or {}
    trained = artifact["adapters"] != NO_ADAPTER
    return {
        "heads_selected_on": selection.get("datasets"),
        "trained_on": data.get("datasets") if trained else None,
        "adapters": artifact["adapters"],
    }


def rerank_lists(
    ranker: Reranker | None,
    lists: Sequence[CandidateList],
    top_k: int,
    progress: bool = True,
    scores: dict[str, dict[str, float]] | None = None,
    costs: list[RankedResults] | None = None,
) -> tuple[RankedRun, Stopwatch]:
    """Rerank the top-k of each list; the candidates below k keep their first-stage order under them. A
    HeadRanker batches the prompts of many queries together (`rank_batch`); other rerankers rank one at a time.

    `ranker=None` keeps the first-stage order (the BM25 baseline). `scores`, when given, receives the
    reranker's own score of each reranked document (for the middle-zone analysis); `costs`, the ranked lists
    (their windows, prompts and tokens)."""
    clock = Stopwatch()
    requests = [(lst.query, lst.head(top_k).documents(), lst.docids()[:top_k]) for lst in lists]
    with clock:
        if ranker is None:
            orders = [ids for _, _, ids in requests]
        else:
            if isinstance(ranker, HeadRanker):
                ranked_lists = ranker.rank_batch([r for r in requests if r[1]], progress=progress)
            else:
                ranked_lists = [ranker.rank(*r) for r in tqdm(requests, disable=not progress, unit="query") if r[1]]
            if costs is not None:
                costs.extend(ranked_lists)
            ranked_iter = iter(ranked_lists)
            orders = []
            for lst, (_, documents, _) in zip(lists, requests):
                if not documents:
                    orders.append([])
                    continue
                ranked = next(ranked_iter)
                orders.append([r.doc_id for r in ranked])
                if scores is not None:
                    scores[lst.qid] = {r.doc_id: r.score for r in ranked}
    clock.count = len(lists)
    run = run_from_ranking([(lst.qid, order + lst.docids()[top_k:]) for lst, order in zip(lists, orders)])
    return run, clock


@dataclass
class EvalResult:
    metrics: dict
    run: RankedRun


def evaluate_method(
    ranker: Reranker | None,
    method: str,
    data: Dataset,
    top_k: int = 20,
    limit: int | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> EvalResult:
    """Rerank a dataset with a ranker (or none, for BM25) and score it with ir-measures."""
    lists = data.judged()[:limit] if limit else data.judged()
    model_scores: dict[str, dict[str, float]] = {}
    ranked: list[RankedResults] = []
    run, clock = rerank_lists(ranker, lists, top_k, progress, model_scores, ranked)
    metrics = {
        "dataset": data.name,
        "method": method,
        **describe_ranker(ranker),
        "top_k": top_k,
        "queries": len(lists),
        **evaluate(scored(run), data.qrels),
        **(list_costs(ranked) if isinstance(ranker, HeadRanker) else {}),
        "seconds_per_query": clock.per_item,
        "peak_rss_mb": peak_rss_mb(),
        "machine": machine(),
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_run(out / "run.trec", run, tag=method)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if model_scores:
            write_scores(out / "scores.jsonl", lists, top_k, model_scores)
    return EvalResult(metrics, run)


def list_costs(ranked: Sequence[RankedResults]) -> dict[str, float]:
    """Mean windows, prompts (every round of a split list) and prompt tokens per reranked list."""
    n = max(len(ranked), 1)
    return {
        "windows_per_query": sum(r.windows for r in ranked) / n,
        "prompts_per_query": sum(r.prompts for r in ranked) / n,
        "prompt_tokens_per_query": sum(r.tokens for r in ranked) / n,
    }


def write_scores(path: Path, lists: Sequence[CandidateList], top_k: int, scores: dict[str, dict[str, float]]) -> None:
    """The reranker's own scores with each document's first-stage rank (input positions follow from it)."""
    with path.open("w") as fh:
        for lst in lists:
            for rank, c in enumerate(lst.candidates[:top_k], 1):
                if c.docid in scores.get(lst.qid, {}):
                    row = {
                        "qid": lst.qid,
                        "docid": c.docid,
                        "first_stage_rank": rank,
                        "score": scores[lst.qid][c.docid],
                    }
                    fh.write(json.dumps(row) + "\n")


def summary(metrics: dict) -> str:
    columns = ["dataset", "method", "queries", "top_k", "ndcg@10", "seconds_per_query", "peak_rss_mb", "layers_run"]
    return format_table([metrics], columns)
