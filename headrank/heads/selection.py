"""Head statistics on labelled lists and entropy-regularized head selection (D - lambda * H), optionally within a
depth budget: the deepest selected layer fixes how many layers every query runs."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from headrank.data import CandidateList, Qrels
from headrank.evaluation.metrics import adjacent_pair_accuracy, ndcg_at
from headrank.heads.headset import HeadSet
from headrank.ranker import HeadRanker
from headrank.training.lists import held_out_qids


def normalized_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of each row of a distribution over the last axis, divided by log(n): 0 one-hot, 1 uniform."""
    p = np.clip(p, 0, None)
    p = p / np.clip(p.sum(-1, keepdims=True), 1e-12, None)
    n = p.shape[-1]
    if n < 2:
        return np.zeros(p.shape[:-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return h / np.log(n)


@dataclass
class HeadTable:
    """Per-head passage scores of labelled lists: what selection and analysis are computed from."""

    heads: list[tuple[int, int]]
    qids: list[str]
    calibrated: list[np.ndarray]
    """per query [heads, docs] calibrated scores, docs in first-stage order."""
    raw: list[np.ndarray]
    """per query [heads, docs] uncalibrated attention mass (for the entropy)."""
    grades: list[np.ndarray]
    ideal: list[list[int]]
    sources: list[str] = field(default_factory=list)
    """the dataset of each query (empty: one source); statistics weigh every source equally."""
    max_depth: int | None = None
    """None when collected over every head of the model; else the layers its ranker ran (`within_depth`): it
    holds no head past them, so it cannot serve a deeper or unbudgeted selection."""

    def source_of(self, i: int) -> str:
        return self.sources[i] if self.sources else ""

    def subset(self, qids: Iterable[str]) -> HeadTable:
        """The same table restricted to `qids` (e.g. the training side of a split)."""
        wanted = set(qids)
        keep = [i for i, q in enumerate(self.qids) if q in wanted]
        columns = (self.qids, self.calibrated, self.raw, self.grades, self.ideal)
        kept = ([c[i] for i in keep] for c in columns)
        return HeadTable(self.heads, *kept, [self.source_of(i) for i in keep], self.max_depth)

    def set_ndcg(self, heads: HeadSet, k: int = 10) -> np.ndarray:
        """Per query, nDCG@k of the ranking a head set gives (the weighted sum of its heads' calibrated rows):
        the same ranking as HeadRanker with those heads, since truncation changes no kept layer."""
        rows = [self.heads.index(h) for h in heads.heads]
        weights = np.asarray(heads.weight_vector(), dtype=np.float32)
        return np.asarray(
            [
                ndcg_at((weights @ cal[rows])[None, :], grades, ideal, k)[0]
                for cal, grades, ideal in zip(self.calibrated, self.grades, self.ideal)
            ]
        )

    def save(self, path: str | Path) -> None:
        arrays = {"heads": np.asarray(self.heads), "qids": np.asarray(self.qids), "sources": np.asarray(self.sources)}
        if self.max_depth is not None:
            arrays["max_depth"] = np.asarray(self.max_depth)
        for i in range(len(self.qids)):
            arrays[f"cal{i}"], arrays[f"raw{i}"] = self.calibrated[i], self.raw[i]
            arrays[f"grades{i}"], arrays[f"ideal{i}"] = self.grades[i], np.asarray(self.ideal[i])
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> HeadTable:
        z = np.load(path, allow_pickle=False)
        n = len(z["qids"])
        return cls(
            heads=[tuple(map(int, h)) for h in z["heads"]],
            qids=[str(q) for q in z["qids"]],
            calibrated=[z[f"cal{i}"] for i in range(n)],
            raw=[z[f"raw{i}"] for i in range(n)],
            grades=[z[f"grades{i}"] for i in range(n)],
            ideal=[z[f"ideal{i}"].tolist() for i in range(n)],
            sources=[str(x) for x in z["sources"]] if "sources" in z else [],
            max_depth=int(z["max_depth"]) if "max_depth" in z else None,
        )


def within_depth(ranker: HeadRanker, max_depth: int | None) -> HeadRanker:
    """The ranker over every head of its first `max_depth` layers, cut there: the head table of a depth budget
    runs only the layers selection may choose from. The cut is made in the shared model: use the ranker this
    returns, not the one given."""
    check_depth(max_depth)
    if max_depth is None or max_depth >= ranker.family.num_layers:
        return ranker
    heads = HeadSet.of((layer, head) for layer in range(max_depth) for head in range(ranker.family.num_heads))
    return HeadRanker(ranker.backbone, replace(ranker.config, heads=heads))


def check_depth(max_depth: int | None) -> None:
    """A depth budget counts the layers that run: at least one."""
    if max_depth is not None and max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, got {max_depth}")


def collect_head_table(
    ranker: HeadRanker, lists: Sequence[CandidateList], qrels: Qrels, progress: bool = True, source: str = ""
) -> HeadTable:
    """Calibrated and raw per-head passage scores of every list, over every head the ranker holds, the lists'
    prompts batched as inference batches them (windowed exactly as inference windows)."""
    if not ranker.config.scoring.calibrate or ranker.config.scoring.token_mask:
        raise ValueError("head statistics need a calibrating ranker without the token mask")
    budget = None if ranker.config.heads.heads is None else ranker.depth
    table = HeadTable(list(ranker.heads.heads), [], [], [], [], [], max_depth=budget)
    chunk = 16  # lists scored together: the progress bar moves, and memory stays bounded
    bar = tqdm(total=len(lists), desc="head statistics", unit="query", disable=not progress)
    for start in range(0, len(lists), chunk):
        part = lists[start : start + chunk]
        prompts = [ranker.prompts(lst.query, lst.documents()) for lst in part]
        scored = iter(ranker.score_many([p for ps in prompts for p in ps]))
        for lst, list_prompts in zip(part, prompts):
            n = len(lst.candidates)
            cal, raw = (np.zeros((len(table.heads), n), dtype=np.float32) for _ in range(2))
            for prompt in list_prompts:
                scores = next(scored)
                cal[:, prompt.order] = scores.per_head.numpy()
                raw[:, prompt.order] = scores.raw.numpy()
            judged = qrels.get(lst.qid, {})
            table.qids.append(lst.qid)
            table.calibrated.append(cal)
            table.raw.append(raw)
            table.grades.append(np.asarray([judged.get(d, 0) for d in lst.docids()], dtype=float))
            table.ideal.append(list(judged.values()))
        bar.update(len(part))
    bar.close()
    if source:
        table.sources = [source] * len(table.qids)
    return table


def merge_tables(tables: Sequence[HeadTable]) -> HeadTable:
    """One table from several (e.g. one per dataset), each query keeping its source."""
    if any(t.heads != tables[0].heads for t in tables):
        raise ValueError("head tables over different heads cannot be merged")
    columns = ("qids", "calibrated", "raw", "grades", "ideal")
    merged = [[row for t in tables for row in getattr(t, name)] for name in columns]
    sources = [t.source_of(i) for t in tables for i in range(len(t.qids))]
    return HeadTable(tables[0].heads, *merged, sources, tables[0].max_depth)


@dataclass
class HeadStats:
    heads: list[tuple[int, int]]
    ndcg: np.ndarray
    pair_accuracy: np.ndarray
    entropy: np.ndarray
    max_depth: int | None = None
    """the depth budget of the table the statistics come from (`HeadTable.max_depth`)."""

    def selection_score(self, lam: float, measure: str = "ndcg") -> np.ndarray:
        """z(D) - lambda * z(H): both standardised over the heads, so lambda weighs them on one scale
        (raw entropy spreads five times wider than nDCG and would otherwise swamp it)."""
        return _standardise(getattr(self, measure)) - lam * _standardise(self.entropy)

    def rows(self, lam: float, measure: str = "ndcg") -> list[dict]:
        score = self.selection_score(lam, measure)
        return [
            {
                "layer": la,
                "head": h,
                "ndcg@10": float(self.ndcg[i]),
                "pair_accuracy": float(self.pair_accuracy[i]),
                "entropy": float(self.entropy[i]),
                "selection_score": float(score[i]),
            }
            for i, (la, h) in enumerate(self.heads)
        ]


def _standardise(x: np.ndarray) -> np.ndarray:
    spread = x.std()
    return (x - x.mean()) / spread if spread > 0 else np.zeros_like(x)


def head_stats(table: HeadTable) -> HeadStats:
    """Mean over queries with at least one relevant candidate (a list without one cannot discriminate), per
    source, then over sources: a dataset of 160 queries does not drown one of 40."""
    per_source: dict[str, tuple[list, list, list]] = {}
    for i, (cal, raw, grades, ideal) in enumerate(zip(table.calibrated, table.raw, table.grades, table.ideal)):
        ndcg, pairs, entropy = per_source.setdefault(table.source_of(i), ([], [], []))
        entropy.append(normalized_entropy(raw))
        if grades.max() <= 0:
            continue
        ndcg.append(ndcg_at(cal, grades, ideal))
        accuracy, count = adjacent_pair_accuracy(cal, grades)
        if count:
            pairs.append(accuracy)
    sources = [parts for parts in per_source.values() if parts[0]]
    if not sources:
        raise ValueError("no training list holds a relevant candidate: head statistics need graded lists")
    chance = np.full(len(table.heads), 0.5)
    return HeadStats(
        heads=table.heads,
        ndcg=np.mean([np.mean(ndcg, axis=0) for ndcg, _, _ in sources], axis=0),
        pair_accuracy=np.mean([np.mean(pairs, axis=0) if pairs else chance for _, pairs, _ in sources], axis=0),
        entropy=np.mean([np.mean(entropy, axis=0) for _, _, entropy in sources], axis=0),
        max_depth=table.max_depth,
    )


def select_heads(
    stats: HeadStats, k: int = 16, lam: float = 0.5, measure: str = "ndcg", max_depth: int | None = None
) -> HeadSet:
    """Top-k heads by D - lambda * H (lambda = 0 and measure ndcg is QRHead), among the heads of the first
    `max_depth` layers when given: the ranker then runs at most that many layers. The score is standardised
    over the heads of the statistics, so a budget within them keeps the best heads by the same score, not a
    re-weighted one; statistics collected under a budget cannot choose beyond it."""
    if measure not in ("ndcg", "pair_accuracy"):
        raise ValueError(f"measure must be 'ndcg' or 'pair_accuracy', not {measure!r}")
    check_depth(max_depth)
    held = stats.max_depth
    if held is not None and (max_depth is None or max_depth > held):
        wanted = f"the first {max_depth} layers" if max_depth is not None else "every layer"
        raise ValueError(
            f"the head table holds only the first {held} layers (collected with max_depth {held}): "
            f"collect it again to choose among {wanted}"
        )
    eligible = [i for i, (layer, _) in enumerate(stats.heads) if max_depth is None or layer < max_depth]
    if not 1 <= k <= len(eligible):
        within = f" within the first {max_depth} layers" if max_depth is not None else ""
        raise ValueError(f"k must be in 1..{len(eligible)} (the heads{within}), got {k}")
    score = stats.selection_score(lam, measure)[eligible]
    best = np.argsort(-score, kind="stable")[:k]
    return HeadSet.of(stats.heads[eligible[i]] for i in best)


@dataclass(frozen=True)
class SelectionSpec:
    """How heads are chosen from a head table, as `headrank select-heads`, `reproduce` and the depth benchmark
    choose them, and as the heads file (and every artifact trained from it) records it."""

    k: int = 16
    lam: float = 0.5
    measure: str = "ndcg"
    max_depth: int | None = None
    validation: float = 0.2
    """share of each dataset's queries held out: the ones `headrank train` holds out with the same seed."""
    seed: int = 0

    def record(self, datasets: Sequence[str], train: HeadTable, held_out: int) -> dict:
        return {
            "datasets": list(datasets),
            "queries": len(train.qids),
            "held_out": held_out,
            "k": self.k,
            "lam": self.lam,
            "measure": self.measure,
            "max_depth": self.max_depth,
            "seed": self.seed,
        }


def split_table(
    table: HeadTable, limits: Mapping[str, int | None], data_dir: Path, list_size: int, fraction: float, seed: int
) -> tuple[HeadTable, HeadTable]:
    """(training side, validation side) of a table: the queries `headrank train` holds out of these datasets
    (each read to its judged-query limit) are never chosen on."""
    held = held_out_qids(limits, data_dir, list_size, fraction, seed) if fraction else set()
    return table.subset(q for q in table.qids if q not in held), table.subset(q for q in table.qids if q in held)


def collect_tables(
    ranker: HeadRanker, datasets: Sequence[str], data_dir: Path, top_k: int, limit: int | None, progress: bool
) -> HeadTable:
    """One head table over the judged lists of several datasets, each query tagged with its dataset."""
    from headrank.datasets import judged_lists

    tables = []
    for name in datasets:
        lists, qrels = judged_lists(name, data_dir, top_k, limit)
        tables.append(collect_head_table(ranker, lists, qrels, progress=progress, source=name))
    return merge_tables(tables)


def select_and_save(
    table: HeadTable,
    spec: SelectionSpec,
    out: Path,
    data_dir: Path,
    limit: int | None,
    top_k: int,
    datasets: Sequence[str] = (),
) -> tuple[HeadSet, HeadTable, int]:
    """The selection pipeline on a head table: hold the validation queries out, compute the statistics on the
    rest, choose, and write heads.json (with its record) and the statistics into `out`. Returns (heads, the
    training side, the number held out). `datasets` name the table's queries when it predates their tags."""
    datasets = list(dict.fromkeys([s for s in table.sources if s] or datasets))
    train, held = split_table(table, dict.fromkeys(datasets, limit), data_dir, top_k, spec.validation, spec.seed)
    stats = head_stats(train)
    write_stats(stats, out, spec.lam, spec.measure)
    chosen = select_heads(stats, spec.k, spec.lam, spec.measure, spec.max_depth)
    chosen.save(out / "heads.json", spec.record(datasets, train, len(held.qids)))
    return chosen, train, len(held.qids)


def write_stats(stats: HeadStats, out: Path, lam: float, measure: str = "ndcg") -> None:
    """heads.csv, heads.json and one layers x heads heatmap per statistic."""
    out.mkdir(parents=True, exist_ok=True)
    rows = stats.rows(lam, measure)
    with (out / "head_stats.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "head_stats.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot_heatmaps(stats, out, lam, measure)


def plot_heatmaps(stats: HeadStats, out: Path, lam: float, measure: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = max(la for la, _ in stats.heads) + 1
    heads = max(h for _, h in stats.heads) + 1
    for name, values in (
        ("ndcg", stats.ndcg),
        ("pair_accuracy", stats.pair_accuracy),
        ("entropy", stats.entropy),
        ("selection_score", stats.selection_score(lam, measure)),
    ):
        grid = np.full((layers, heads), np.nan)
        for (la, h), v in zip(stats.heads, values):
            grid[la, h] = v
        fig, ax = plt.subplots(figsize=(1.0 + 0.45 * heads, 1.0 + 0.22 * layers))
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(name)
        fig.colorbar(image, ax=ax)
        fig.tight_layout()
        fig.savefig(out / f"heatmap_{name}.png", dpi=110)
        plt.close(fig)
