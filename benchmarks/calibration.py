"""Is the calibrated relevance a probability? Fit it on training lists, measure it on the test sets.


usage: benchmarks/calibration.py score --data-dir ../shared/data --cache runs/calibration   (the model runs)
       benchmarks/calibration.py table --cache runs/calibration [--save-to ARTIFACT] [--doc docs/rag-scores.md]

`score` runs the default ranker (and the bi-encoder, `--method dense`) over the top-20 BM25 candidates of each
set and keeps, per list, the evidence the calibration reads (scores, raw and N/A attention shares) and the
cosines. Training lists: every DL21 query (grade >= 2 relevant) and the first 24 SciFact-train queries that
the default artifact held out of its adapter's training (its validation lists). Test lists: DL19 (grade >= 2)
and every SciFact test query (a stopped run keeps the lists it scored and goes on from there).

`table` fits on the training lists only and writes the table: Brier score, expected calibration error (10
equal-width bins) and the F1 of "keep when >= 0.5" and of "keep when >= the cut with the best F1 on the
training lists", for today's list-relative relevance, the calibrated relevance, and the bi-encoder's cosine
mapped to a probability by a logistic fit on the same training lists."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from headrank.artifact import DEFAULT_ARTIFACT, read_manifest
from headrank.calibration import ListEvidence, fit_calibration
from headrank.datasets import judged_lists, spec
from headrank.evaluation.metrics import format_table, machine
from headrank.results import relevance_scores

DEPTH = 20
SETS = {  # name -> (dataset, first-n queries or None, role); relevant: the dataset's relevant_grade
    "dl21": ("dl21", None, "train"),
    "dl19": ("dl19", None, "test"),
    "scifact-train": ("scifact-train", 24, "train"),
    "scifact": ("scifact", None, "test"),
}


def score(args) -> None:
    from headrank.baselines.dense import DenseReranker
    from headrank.ranker import HeadRanker

    ranker = HeadRanker.from_artifact(args.artifact)
    dense = DenseReranker.from_pretrained()
    validation = set(read_manifest(args.artifact)["data"]["validation_qids"])
    args.cache.mkdir(parents=True, exist_ok=True)
    for name, (dataset, limit, _) in SETS.items():
        target, done = args.cache / f"{name}.json", args.cache / f"{name}.done"
        if done.exists():
            continue
        lists, qrels = judged_lists(dataset, args.data_dir, DEPTH)
        if name == "scifact-train":
            lists = [lst for lst in lists if lst.qid in validation]
        rows = json.loads(target.read_text()) if target.exists() else []  # a stopped run goes on
        scored_before = {row["qid"] for row in rows}
        lists = [lst for lst in lists[:limit] if lst.qid not in scored_before]
        total = len(rows) + len(lists)
        for start in range(0, len(lists), 8):
            chunk = lists[start : start + 8]
            prompts = [(i, p) for i, lst in enumerate(chunk) for p in ranker.prompts(lst.query, lst.documents())]
            scored = ranker.score_many([p for _, p in prompts])
            for i, lst in enumerate(chunk):
                passes = [(p.order, s) for (j, p), s in zip(prompts, scored) if j == i]
                scores = ranker.combine(len(lst.candidates), passes)
                evidence = ListEvidence.from_passes(scores, passes, ranker.heads.weight_vector())
                rows.append(
                    {
                        "qid": lst.qid,
                        "docids": lst.docids(),
                        "grades": [qrels[lst.qid].get(d, 0) for d in lst.docids()],
                        **vars(evidence),
                        "dense": dense.score(lst.query, lst.documents()),
                    }
                )
            target.write_text(json.dumps(rows) + "\n")  # so far: a stopped run keeps its lists
            print(f"{name}: {len(rows)}/{total}", flush=True)
        done.touch()


def load(cache: Path, name: str) -> tuple[list[ListEvidence], list[np.ndarray], list[list[float]]]:
    relevant = spec(SETS[name][0]).relevant_grade
    rows = json.loads((cache / f"{name}.json").read_text())
    evidence = [ListEvidence(r["scores"], r["raw_share"], r["na_share"]) for r in rows]
    labels = [(np.asarray(r["grades"]) >= relevant).astype(float) for r in rows]
    return evidence, labels, [r["dense"] for r in rows]


def brier(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the gap between mean prediction and frequency, over equal-width bins."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).mean() for b in set(which)))


def f1(keep: np.ndarray, y: np.ndarray) -> float:
    tp = float((keep & (y == 1)).sum())
    return 2 * tp / (keep.sum() + y.sum()) if keep.sum() + y.sum() else 0.0


def best_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The cut-off of `p` with the best F1 (keep >= it): chosen on training lists only."""
    candidates = np.unique(p)
    return float(max(candidates, key=lambda t: f1(p >= t, y)))


def platt(x: np.ndarray, y: np.ndarray):
    """A one-feature logistic fit (the bi-encoder's cosine to a probability)."""
    from scipy.optimize import minimize

    def loss(theta):
        logits = theta[0] * x + theta[1]
        return float(np.mean(np.logaddexp(0, logits) - y * logits))

    a, b = minimize(loss, np.zeros(2), method="L-BFGS-B").x
    return lambda v: 1 / (1 + np.exp(-(a * np.asarray(v) + b)))


def measures(p: np.ndarray, y: np.ndarray, cut: float) -> dict:
    return {
        "Brier": brier(p, y),
        "ECE": ece(p, y),
        "F1 at 0.5": f1(p >= 0.5, y),
        "F1 at train cut": f1(p >= cut, y),
        "train cut": cut,
    }


def table(args) -> None:
    train = {n: load(args.cache, n) for n, s in SETS.items() if s[2] == "train"}
    evidence = [e for ev, _, _ in train.values() for e in ev]
    labels = [y for _, ys, _ in train.values() for y in ys]
    fitted = fit_calibration(
        zip(evidence, labels),
        fitted_on={"lists": len(evidence), "sets": {n: len(v[0]) for n, v in train.items()}, "depth": DEPTH},
    )
    y_train = np.concatenate(labels)
    cosine = platt(np.concatenate([d for _, _, ds in train.values() for d in ds]), y_train)

    def methods(ev: list[ListEvidence], ds: list[list[float]]) -> dict[str, np.ndarray]:
        return {
            "list-relative (today)": np.concatenate([relevance_scores(e.scores) for e in ev]),
            "calibrated": np.concatenate([fitted.relevance(e) for e in ev]),
            "bi-encoder cosine, fitted": cosine(np.concatenate(ds)),
        }

    dense_train = [d for _, _, ds in train.values() for d in ds]
    cuts = {m: best_threshold(p, y_train) for m, p in methods(evidence, dense_train).items()}
    rows = []
    for name in [n for n, s in SETS.items() if s[2] == "test" and (args.cache / f"{n}.json").exists()]:
        ev, ys, ds = load(args.cache, name)
        y = np.concatenate(ys)
        head = {"set": name, "lists": len(ev), "relevant": f"{int(y.sum())}/{len(y)}"}
        for method, p in methods(ev, ds).items():
            measured = {k: round(v, 4) for k, v in measures(p, y, cuts[method]).items()}
            rows.append(head | {"relevance": method} | measured)
        rows.append(head | {"relevance": "keep all (reference)", "F1 at 0.5": round(f1(y >= 0, y), 4)})
    columns = ["set", "lists", "relevant", "relevance", "Brier", "ECE", "F1 at 0.5", "F1 at train cut", "train cut"]
    text = format_table(rows, columns)
    coefficients = dict(zip(fitted.features, (round(c, 3) for c in fitted.coefficients)))
    print(text, f"\ncoefficients (standardised features): {coefficients}\n{machine()}")
    if args.save_to:
        print("saved", fitted.save(args.save_to))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "calibration": fitted.to_dict()}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score")
    s.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    s.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT)
    s.add_argument("--cache", type=Path, required=True)
    t = sub.add_parser("table")
    t.add_argument("--cache", type=Path, required=True)
    t.add_argument("--save-to", type=Path, help="write calibration.json into this artifact folder")
    t.add_argument("--json", type=Path, help="write the rows and the fitted calibration here")
    args = parser.parse_args()
    score(args) if args.command == "score" else table(args)


if __name__ == "__main__":
    main()
