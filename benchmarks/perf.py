"""One command for the cost side of HeadRank: HeadRank against ICR and generation (RankGPT) at top-20/50/100 with
where each method's time goes (prefill vs decoding), each compute dtype against float32 (speed and ranking
agreement), growth with list size and passage length, FLOPs against the matmul throughput this machine
reaches, a profile of one query, and the speed settings we tried (before/after). Writes perf.md, perf.json
and PNG plots to --out.

    flock /tmp/headrank-cpu.lock .venv/bin/python benchmarks/perf.py --data-dir ../shared/data --out DIR

HeadRank is the committed trained ranker at the default dtype ("auto": what this machine runs natively)
unless --artifact or --heads say otherwise. `--device cuda` runs the same on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import clock, matmul_throughput, pass_flops, sync, timed
from headrank.artifact import DEFAULT_ARTIFACT
from headrank.baselines.rankgpt import GenerationCost, RankGPT
from headrank.data import CandidateList, Qrels, default_data_dir, run_from_ranking, scored
from headrank.datasets import load_dataset
from headrank.engine.backbone import load_backbone
from headrank.engine.prompt import PromptTemplate
from headrank.evaluation.analysis import kendall_tau
from headrank.evaluation.metrics import evaluate, format_table, machine
from headrank.evaluation.significance import compare_runs
from headrank.ranker import HeadRanker, RankerConfig
from headrank.results import best_first

SECTIONS = ("methods", "dtype", "profile", "scaling", "forward", "settings")
SECONDS = ("seconds", "cpu_seconds", "prefill_seconds", "decode_seconds")


def rank_all(ranker, lists: Sequence[CandidateList]) -> list[list[str]]:
    return [[r.doc_id for r in ranker.rank(lst.query, lst.documents(), lst.docids())] for lst in lists]


# ---------------------------------------------------------------- profile of one query


def profile_query(ranker: HeadRanker, lst: CandidateList, device: str) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds per phase of one list: tokenisation, prefix pass, query passes with the reduction to
    passage scores, through the same calls as HeadRanker.score."""
    phases = {name: [0.0, 0.0] for name in ["tokenisation", "prefix pass", "query passes and score reduction"]}

    def charge(name: str, start: tuple[float, float]) -> tuple[float, float]:
        sync(device)
        now = clock()
        phases[name] = [phases[name][0] + now[0] - start[0], phases[name][1] + now[1] - start[1]]
        return now

    with torch.inference_mode():
        start = clock()
        prompts = ranker.prompts(lst.query, lst.documents())
        start = charge("tokenisation", start)
        for prompt in prompts:
            prefix = ranker.encode([prompt])
            start = charge("prefix pass", start)
            ranker.prompt_scores(prompt, prefix).scores.cpu()
            start = charge("query passes and score reduction", start)
    return {name: tuple(v) for name, v in phases.items()} | {
        "prompt tokens": (sum(len(p.input_ids) for p in prompts),) * 2,
        "windows": (len(prompts),) * 2,
    }


def op_table(ranker: HeadRanker, lst: CandidateList, device: str, rows: int = 8) -> list[dict]:
    """The operators that take the time of one query (torch.profiler, self time on the device that runs them)."""
    from torch.profiler import ProfilerActivity, profile

    gpu = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    with profile(activities=activities) as prof:
        rank_all(ranker, [lst])
    attribute = "self_device_time_total" if gpu else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, attribute), reverse=True)
    total = sum(getattr(e, attribute) for e in events)
    return [
        {
            "operator": e.key,
            "calls": e.count,
            "self s": getattr(e, attribute) / 1e6,
            "share": getattr(e, attribute) / total,
        }
        for e in events[:rows]
    ]


# ---------------------------------------------------------------- the benchmark


@dataclass
class Setup:
    model: str
    device: str
    lists: list[CandidateList]


@dataclass
class ListCost:
    """One list reranked by one method: its time, what it processed, and where the time went."""

    seconds: float
    cpu_seconds: float
    windows: int
    forward_passes: int
    prompt_tokens: int
    generated_tokens: int
    prefill_seconds: float
    decode_seconds: float
    ranking: list[str]


def attention_cost(ranker: HeadRanker, lst: CandidateList, device: str) -> ListCost:
    """HeadRanker.score, timed: per batch of windows one pass over the passages and one pass of the query and
    its N/A twin over them. Every pass is a prefill: nothing is decoded."""
    sync(device)
    start = clock()
    prompts = ranker.prompts(lst.query, lst.documents())
    scores = ranker.score(lst.query, lst.documents())
    sync(device)
    wall, cpu = (end - begin for end, begin in zip(clock(), start))
    calibrate = ranker.config.scoring.calibrate
    tokens = sum(len(p.input_ids) + (len(p.calibration_ids) if calibrate else 0) for p in prompts)
    docids = lst.docids()
    passes = 2 * len(ranker.batches(prompts))
    return ListCost(wall, cpu, len(prompts), passes, tokens, 0, wall, 0.0, [docids[i] for i in best_first(scores)])


def generation_cost(ranker: RankGPT, lst: CandidateList, device: str) -> ListCost:
    """RankGPT.rank, with its generation clock read: one prefill per window, then one pass per further token."""
    ranker.cost = GenerationCost()
    sync(device)
    start = clock()
    ranked = ranker.rank(lst.query, lst.documents(), lst.docids())
    sync(device)
    wall, cpu = (end - begin for end, begin in zip(clock(), start))
    c = ranker.cost
    return ListCost(
        wall,
        cpu,
        c.windows,
        c.forward_passes,
        c.prompt_tokens,
        c.generated_tokens,
        c.prefill_seconds,
        c.decode_seconds,
        [r.doc_id for r in ranked],
    )


def list_cost(ranker, lst: CandidateList, device: str) -> ListCost:
    return generation_cost(ranker, lst, device) if isinstance(ranker, RankGPT) else attention_cost(ranker, lst, device)


def warm_up(rankers: dict, lst: CandidateList, device: str) -> None:
    """First calls pay one-off setup: one short list through each ranker before anything is timed."""
    for ranker in rankers.values():
        list_cost(ranker, lst.head(5), device)


def interleaved(rankers: dict, lists: Sequence[CandidateList], device: str) -> dict[str, list[ListCost]]:
    """Each ranker's cost of each list, the rankers taking turns list by list, so that a slower stretch of the
    machine hits all of them."""
    costs: dict[str, list[ListCost]] = {name: [] for name in rankers}
    for lst in lists:
        for name, ranker in rankers.items():
            costs[name].append(list_cost(ranker, lst, device))
    return costs


def compare_methods(rankers: dict, lists: Sequence[CandidateList], depths: Sequence[int], device: str) -> list[dict]:
    """Every method on the same lists at each list depth (`interleaved`), each with its own windows: HeadRank
    and ICR split a list only when it outgrows the context, RankGPT slides its window of 20 by 10 from the
    bottom."""
    warm_up(rankers, lists[0], device)
    rows = []
    for depth in depths:
        costs = interleaved(rankers, [lst.head(depth) for lst in lists], device)

        def mean(name: str, attr: str, costs=costs) -> float | int:
            """The mean over the lists; a count that is the same on every list stays an integer."""
            value = statistics.fmean(getattr(c, attr) for c in costs[name])
            return int(value) if attr not in SECONDS and value.is_integer() else value

        headrank_s = mean(next(iter(rankers)), "seconds")
        for name, ranker in rankers.items():
            row = {
                "method": name,
                "list depth": depth,
                "layers run": ranker.layer_calls() if isinstance(ranker, HeadRanker) else ranker.backbone.num_layers,
                "windows": mean(name, "windows"),
                "forward passes": mean(name, "forward_passes"),
                "prompt tokens": mean(name, "prompt_tokens"),
                "generated tokens": mean(name, "generated_tokens"),
                "prefill s": mean(name, "prefill_seconds"),
                "decode s": mean(name, "decode_seconds"),
                "s/query": mean(name, "seconds"),
                "CPU s/query": mean(name, "cpu_seconds"),
                "HeadRank time / this": headrank_s / mean(name, "seconds"),
            }
            if isinstance(ranker, RankGPT):
                row["formatting success"] = ranker.formatting_success_rate
            rows.append(row)
    return rows


def dtype_table(
    load: Callable[[str], HeadRanker], lists: Sequence[CandidateList], qrels: Qrels, device: str
) -> list[dict]:
    """Each compute dtype against float32 on the same lists, timed interleaved list by list: seconds per query,
    identical top-10s, Kendall tau of the whole reranked order, nDCG@10 and its paired test against float32."""
    rankers = {dtype: load(dtype) for dtype in ("float32", "bfloat16")}
    warm_up(rankers, lists[0], device)
    costs = interleaved(rankers, lists, device)
    reference = [c.ranking for c in costs["float32"]]
    qids = [lst.qid for lst in lists]
    runs = {dtype: scored(run_from_ranking(zip(qids, (c.ranking for c in cs)))) for dtype, cs in costs.items()}
    compared = {c.system: c for c in compare_runs(runs["float32"], runs, qrels, "nDCG@10")}
    position = lambda ranking: {d: i for i, d in enumerate(ranking)}  # noqa: E731
    rows = []
    for dtype in rankers:
        rankings = [c.ranking for c in costs[dtype]]
        seconds = statistics.fmean(c.seconds for c in costs[dtype])
        taus = [
            kendall_tau(-np.asarray([position(r)[d] for d in ref]), -np.arange(len(ref)))
            for r, ref in zip(rankings, reference)
        ]
        rows.append(
            {
                "dtype": dtype,
                "s/query": seconds,
                "CPU s/query": statistics.fmean(c.cpu_seconds for c in costs[dtype]),
                "time / float32": seconds / statistics.fmean(c.seconds for c in costs["float32"]),
                "identical top-10": f"{sum(r[:10] == ref[:10] for r, ref in zip(rankings, reference))}/{len(lists)}",
                "identical order": f"{sum(r == ref for r, ref in zip(rankings, reference))}/{len(lists)}",
                "Kendall tau vs float32": statistics.fmean(taus),
                "min tau": min(taus),
                "nDCG@10": evaluate(runs[dtype], qrels, ["nDCG@10"])["ndcg@10"],
                "delta vs float32": compared[dtype].delta,
                "W/L/T": f"{compared[dtype].wins}/{compared[dtype].losses}/{compared[dtype].ties}",
                "p": compared[dtype].p_value,
            }
        )
    return rows


def count_windows(ranker: HeadRanker, lst: CandidateList) -> int:
    return len(ranker.prompts(lst.query, lst.documents()))


def scaling(selected: HeadRanker, icr: HeadRanker, setup: Setup, sizes: Sequence[int]) -> list[dict]:
    lst = setup.lists[0]
    rows = []
    for n in sizes:
        sub = lst.head(n)
        for name, ranker in (("HeadRank", selected), ("ICR", icr)):
            timing, _ = timed(lambda r=ranker, s=sub: rank_all(r, [s]), setup.device)
            rows.append(
                {
                    "method": name,
                    "passages": n,
                    "windows": count_windows(ranker, sub),
                    "s/query": timing.per_query,
                    "CPU s/query": timing.cpu_per_query,
                    "peak MB": timing.peak_mb,
                    "growth MB": timing.growth_mb,
                }
            )
    return rows


def length_scaling(selected: HeadRanker, setup: Setup, lengths: Sequence[int], count: int = 20) -> list[dict]:
    """Passages of exactly L tokens (neighbouring candidates concatenated, then cut), same query, 20 of them."""
    lst = setup.lists[0]
    texts = [c.text for c in lst.candidates]
    long_docs = [" ".join(texts[i:] + texts[:i])[:20000] for i in range(count)]
    rows = []
    for length in lengths:
        config = RankerConfig(heads=selected.heads, template=PromptTemplate(max_passage_tokens=length))
        ranker = HeadRanker(selected.backbone, config)
        timing, _ = timed(lambda r=ranker: r.rank(lst.query, long_docs), setup.device)
        rows.append(
            {
                "passage tokens": length,
                "prompt tokens": len(ranker.prompts(lst.query, long_docs)[0].input_ids),
                "s/query": timing.per_query,
                "CPU s/query": timing.cpu_per_query,
                "peak MB": timing.peak_mb,
                "growth MB": timing.growth_mb,
            }
        )
    return rows


def forward_variants(ranker: HeadRanker, setup: Setup, top_k: int) -> list[dict]:
    """The same attention rows two ways, timed interleaved per list: every layer run to its end, and early exit
    (the default), which stops the last layer once its keys/values are kept. The rows must not change."""
    variants = {
        "every layer to its end": lambda p: ranker.token_attention([p], exit_early=False),
        "+ early exit at the last layer (default)": lambda p: ranker.token_attention([p]),
    }
    prompts = [p for lst in setup.lists for p in ranker.prompts(lst.query, lst.head(top_k).documents())]
    spent = {name: [0.0, 0.0] for name in variants}
    rows_of: dict[str, list[torch.Tensor]] = {name: [] for name in variants}
    with torch.inference_mode():
        variants["+ early exit at the last layer (default)"](prompts[0])  # warm-up
        for prompt in prompts:
            for name, attend in variants.items():
                sync(setup.device)
                start = clock()
                rows_of[name].append(attend(prompt).cpu())
                sync(setup.device)
                spent[name] = [t + now - then for t, now, then in zip(spent[name], clock(), start)]
    first = next(iter(variants))
    rows = []
    for name in variants:
        wall, cpu = (t / len(setup.lists) for t in spent[name])
        rows.append(
            {
                "forward pass": name,
                "s/query": wall,
                "CPU s/query": cpu,
                "CPU time / first": cpu / (spent[first][1] / len(setup.lists)),
                "max |attention diff|": max(float((a - b).abs().max()) for a, b in zip(rows_of[name], rows_of[first])),
            }
        )
    return rows


def optimisations(selected: HeadRanker, setup: Setup, top_k: int) -> list[dict]:
    """Thread settings and several queries at once, on the same lists; rankings compared with the default
    (lists whose whole ranking is identical). The dtypes have their own table (`dtype_table`).

    "At once" runs lists in parallel Python threads with one intra-op thread each: the capture state is
    thread-local, so one HeadRanker serves them all, and the cores are not split inside small operators."""
    lists = [lst.head(top_k) for lst in setup.lists]
    threads = torch.get_num_threads()
    rank_all(selected, lists[:1])
    rows, reference = [], None

    def measure(name: str, intra_op: int, workers: int) -> None:
        nonlocal reference
        torch.set_num_threads(intra_op)
        sync(setup.device)
        start = clock()
        with ThreadPoolExecutor(workers) as pool:
            rankings = list(pool.map(lambda lst: rank_all(selected, [lst])[0], lists))
        sync(setup.device)
        wall, cpu = (end - begin for end, begin in zip(clock(), start))
        reference = reference or rankings
        rows.append(
            {
                "setting": name,
                "s/query (wall / queries)": wall / len(lists),
                "CPU s/query": cpu / len(lists),
                "queries/s": len(lists) / wall,
                "same rankings": f"{sum(a == b for a, b in zip(rankings, reference))}/{len(lists)} lists",
            }
        )

    measure(f"one query at a time, {threads} threads (default)", threads, 1)
    measure("one query at a time, 1 thread", 1, 1)
    if threads > 1:
        measure(f"{threads} queries at once, 1 thread each", 1, threads)
    measure(f"one query at a time, {threads} threads (default, again)", threads, 1)
    torch.set_num_threads(threads)
    return rows


# ---------------------------------------------------------------- output


def footer(meta: dict) -> str:
    return f"{meta['machine']} | {meta['device']} | {meta['command']}"


def plot(results: dict, out: Path, meta: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []

    def save(fig, name):
        fig.text(0.01, 0.005, footer(meta), fontsize=6, wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        names.append(name)

    if "methods" in results:
        rows = results["methods"]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        depths = list(dict.fromkeys(r["list depth"] for r in rows))
        colours = ["tab:green", "tab:blue", "tab:red"]
        width = 0.8 / len(methods)
        fig, ax = plt.subplots(figsize=(9, 4))
        for m, method in enumerate(methods):
            pts = [next(r for r in rows if r["method"] == method and r["list depth"] == d) for d in depths]
            x = [i + (m - (len(methods) - 1) / 2) * width for i in range(len(depths))]
            prefill, decode = [r["prefill s"] for r in pts], [r["decode s"] for r in pts]
            label = method.split(" (")[0]
            ax.bar(x, prefill, width, color=colours[m % 3], label=f"{label}: prefill")
            if any(decode):
                ax.bar(
                    x,
                    decode,
                    width,
                    bottom=prefill,
                    color=colours[m % 3],
                    hatch="//",
                    alpha=0.5,
                    label=f"{label}: decoding",
                )
            for xi, r in zip(x, pts):
                ax.text(xi, r["s/query"], f"{r['forward passes']:.0f} passes", ha="center", va="bottom", fontsize=6)
        ax.set_xticks(range(len(depths)), [f"top-{d}" for d in depths])
        ax.set_ylabel("seconds per query")
        ax.set_title("Same model, same candidates, one run: each method's time, split into prefill and decoding")
        ax.legend(fontsize=7)
        save(fig, "methods.png")

    if "passages" in results:
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
        for method, style in (("HeadRank", "o-"), ("ICR", "s--")):
            pts = [r for r in results["passages"] if r["method"] == method]
            ax[0].plot([r["passages"] for r in pts], [r["CPU s/query"] for r in pts], style, label=method)
            ax[1].plot([r["passages"] for r in pts], [r["growth MB"] for r in pts], style, label=method)
        ax[0].set_xlabel("passages")
        ax[0].set_ylabel("CPU seconds per query")
        ax[1].set_xlabel("passages")
        ax[1].set_ylabel("memory growth during ranking (MB)")
        ax[0].legend()
        lengths = results["lengths"]
        ax[2].plot([r["passage tokens"] for r in lengths], [r["CPU s/query"] for r in lengths], "o-", color="tab:green")
        ax[2].set_xlabel("tokens per passage (20 passages, HeadRank)")
        ax[2].set_ylabel("CPU seconds per query")
        save(fig, "scaling.png")

    if "profile" in results:
        phases = {k: v[1] for k, v in results["profile"].items() if k not in ("prompt tokens", "windows")}
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.barh(list(phases), list(phases.values()), color="tab:green")
        ax.set_xlabel("CPU seconds (one top-20 query, HeadRank)")
        ax.invert_yaxis()
        save(fig, "profile.png")
    return names


def markdown(results: dict, meta: dict, plots: list[str]) -> str:
    def table(key: str) -> str:
        return format_table(results[key], list(dict.fromkeys(c for row in results[key] for c in row)))

    lines = [
        "# headrank performance benchmark",
        "",
        f"* machine: {meta['machine']}; device `{meta['device']}`; torch {meta['torch']}, {meta['threads']} threads; "
        f"{meta['date']}",
        f"* dtype: {meta['dtype']} ({meta['dtype_reason']})",
        f"* command: `{meta['command']}`",
        f"* data: {meta['dataset']}, the first {meta['queries']} judged queries, BM25 candidates",
        f"* model: `{meta['model']}`; HeadRank: {meta['headrank']}",
        f"* HeadRank heads: {meta['heads']} (depth {meta['depth']} of {meta['num_layers']} layers)",
        "",
    ]
    if "methods" in results:
        lines += [
            "## HeadRank vs ICR vs generation (RankGPT) by list depth (same model, candidates and run)",
            "",
            "Each method's windows as it defines them. Forward passes: HeadRank and ICR run one pass over the passages",
            "and one batched pass of the query and its N/A twin per window; RankGPT one prefill per window and one",
            "pass per further generated token. *HeadRank time / this*: HeadRank's seconds over this method's.",
            "",
            table("methods"),
            "",
        ]
    if "dtype" in results:
        lines += [
            f"## Compute dtype against float32 (HeadRank, the first {meta['dtype_queries']} judged queries, top-20, "
            "interleaved list by list)",
            "",
            table("dtype"),
            "",
        ]
    if "profile" in results:
        f = results["flops"]
        lines += [
            "## The physical limit: FLOPs of the truncated forward vs matmul throughput",
            "",
            f"One top-20 list: {f['prompt_tokens']} prompt tokens; HeadRank's forward = {f['headrank_gflop']:.1f} "
            f"GFLOP (prefix {f['prefix_gflop']:.1f} + query passes {f['suffix_gflop']:.2f}); ICR's = "
            f"{f['icr_gflop']:.1f} GFLOP. A plain {meta['dtype']} matmul of the model's largest shape "
            f"({f['matmul_shape']}) reaches {f['attainable_gflops']:.1f} GFLOP per {f['per']} here; the forward "
            f"passes reach {f['achieved_gflops']:.1f}: "
            f"**achieved / attainable = {f['achieved_over_attainable']:.2f}**.",
            "",
            "## Where the time of one query goes (HeadRank, top-20)",
            "",
            format_table(
                [{"phase": k, "wall s": v[0], "CPU s": v[1]} for k, v in results["profile"].items()],
                ["phase", "wall s", "CPU s"],
            ),
            "",
            table("ops"),
            "",
        ]
    if "passages" in results:
        lines += [
            "## Growth with the number of passages (one query)",
            "",
            table("passages"),
            "",
            "## Growth with passage length (20 passages, HeadRank's heads untrained)",
            "",
            table("lengths"),
            "",
        ]
    if "forward" in results:
        lines += [
            "## Exact rewrites of the forward pass (before/after, interleaved on the same lists)",
            "",
            table("forward"),
            "",
        ]
    if "optimisations" in results:
        lines += ["## Settings tried (before/after, same queries)", "", table("optimisations"), ""]
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="the base model of ICR, RankGPT and --heads")
    parser.add_argument("--artifact", default=str(DEFAULT_ARTIFACT), help="the trained HeadRank to time")
    parser.add_argument("--heads", help="time these heads untrained instead of --artifact ('layer-head,...' or a file)")
    parser.add_argument("--data-dir", help="datasets folder (default: $HEADRANK_DATA)")
    parser.add_argument("--dataset", default="dl19")
    parser.add_argument("--queries", type=int, default=3, help="queries timed per method and list depth")
    parser.add_argument("--list-depths", default="20,50,100", help="candidates reranked, for the methods table")
    parser.add_argument("--dtype", default="auto", help="dtype of every section but the dtype table")
    parser.add_argument(
        "--window-tokens",
        type=int,
        help="also time HeadRank with windows of at most this many tokens (a trade-off, not its own windows)",
    )
    parser.add_argument("--dtype-queries", type=int, default=0, help="queries of the dtype table (0: all judged)")
    parser.add_argument("--sizes", default="10,20,50,100", help="list sizes for the scaling curve")
    parser.add_argument("--lengths", default="32,64,128,256", help="passage lengths (tokens) for the scaling curve")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {','.join(SECTIONS)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-rankgpt", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        parser.error(f"unknown sections {sorted(sections - set(SECTIONS))}: choose from {SECTIONS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    data = load_dataset(args.dataset, default_data_dir(args.data_dir))
    judged = data.judged()
    if len(judged) < args.queries:
        parser.error(f"{args.dataset} has {len(judged)} judged queries, fewer than --queries {args.queries}")
    lists = judged[: args.queries]
    setup = Setup(args.model, args.device, lists)

    def load_headrank(dtype: str) -> HeadRanker:
        if args.heads:
            return HeadRanker.from_pretrained(args.model, args.heads, dtype=dtype, device=args.device)
        return HeadRanker.from_artifact(args.artifact, dtype=dtype, device=args.device)

    headrank = load_headrank(args.dtype)
    full = load_backbone(args.model, dtype=args.dtype, device=args.device)
    icr = HeadRanker(full)
    plain = (  # the same heads untrained, for the sections that share one ranker between threads or rebuild it
        HeadRanker(load_backbone(args.model, dtype=args.dtype, device=args.device), RankerConfig(headrank.heads))
        if sections & {"scaling", "forward", "settings"}
        else None
    )
    meta = {
        "machine": machine() if args.device == "cpu" else f"{machine()}, {torch.cuda.get_device_name()}",
        "device": args.device,
        "dtype": headrank.backbone.precision.dtype,
        "dtype_reason": headrank.backbone.precision.reason,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "dataset": args.dataset,
        "queries": args.queries,
        "dtype_queries": args.dtype_queries or len(judged),
        "model": args.model,
        "headrank": f"heads {args.heads}, untrained" if args.heads else f"the artifact {args.artifact}",
        "heads": headrank.heads.describe(),
        "depth": headrank.depth,
        "num_layers": full.num_layers,
    }
    results: dict = {}
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    if "methods" in sections:
        log("methods by list depth")
        rankers = {"HeadRank": headrank, "ICR (all heads, full depth)": icr}
        if args.window_tokens:
            windowed = headrank.variant(max_length=args.window_tokens)
            rankers[f"HeadRank, windows of <= {args.window_tokens} tokens"] = windowed
        if not args.skip_rankgpt:
            rankers["RankGPT (generative, window 20/10)"] = RankGPT(full)
        depths = [int(d) for d in args.list_depths.split(",")]
        results["methods"] = compare_methods(rankers, lists, depths, args.device)
    if "dtype" in sections:
        log("dtype")
        dtype_lists = [lst.head(20) for lst in judged[: args.dtype_queries or None]]
        results["dtype"] = dtype_table(load_headrank, dtype_lists, data.qrels, args.device)
    top = lists[0].head(20)
    if "profile" in sections:
        log("profile")
        runs = [profile_query(headrank, top, args.device) for _ in range(3)]
        results["profile"] = {k: tuple(statistics.median(r[k][i] for r in runs) for i in (0, 1)) for k in runs[0]}
        results["ops"] = op_table(headrank, top, args.device)
        prompt = headrank.prompts(top.query, top.documents())[0]
        width = max(len(prompt.query_ids), len(prompt.calibration_ids))
        config = full.model.config
        mine = pass_flops(config, headrank.depth, prompt.query_start, 2, width)
        theirs = pass_flops(config, full.num_layers, prompt.query_start, 2, width)
        shape = (len(prompt.input_ids), config.hidden_size, config.intermediate_size)
        attainable = matmul_throughput(args.device, *shape, dtype=headrank.backbone.model.dtype)
        spent = 0 if args.device.startswith("cuda") else 1  # CPU-seconds on CPU (see `clock`), wall on CUDA
        profile = results["profile"]
        forward_s = profile["prefix pass"][spent] + profile["query passes and score reduction"][spent]
        results["flops"] = {
            "prompt_tokens": len(prompt.input_ids),
            "prefix_gflop": mine["prefix"] / 1e9,
            "suffix_gflop": mine["suffix"] / 1e9,
            "headrank_gflop": mine["total"] / 1e9,
            "icr_gflop": theirs["total"] / 1e9,
            "matmul_shape": f"[{shape[0]}x{shape[1]}] @ [{shape[1]}x{shape[2]}]",
            "attainable_gflops": attainable / 1e9,
            "achieved_gflops": mine["total"] / forward_s / 1e9,
            "achieved_over_attainable": mine["total"] / forward_s / attainable,
            "per": "wall second" if spent == 0 else "CPU-second (all threads)",
        }
    if "scaling" in sections:
        log("scaling")
        results["passages"] = scaling(headrank, icr, setup, [int(s) for s in args.sizes.split(",")])
        results["lengths"] = length_scaling(plain, setup, [int(s) for s in args.lengths.split(",")])
    if "forward" in sections:
        log("forward variants")
        results["forward"] = forward_variants(plain, setup, 20)
    if "settings" in sections:
        log("settings")
        results["optimisations"] = optimisations(plain, setup, 20)
    plots = plot(results, out, meta)
    (out / "perf.json").write_text(json.dumps({"meta": meta, **results}, indent=2, default=str) + "\n")
    (out / "perf.md").write_text(markdown(results, meta, plots))
    print((out / "perf.md").read_text())


if __name__ == "__main__":
    main()
