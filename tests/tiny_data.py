"""Tiny datasets in the layout of ../shared/data, written in code: what the CLI and benchmark tests read."""

from __future__ import annotations

import json
from pathlib import Path

from headrank.data import Candidate, CandidateList, write_candidates
from headrank.datasets import CANDIDATES, QRELS, QUERIES
from headrank.engine.testing import DOCS


def grades_of(qid: int) -> list[int]:
    """Graded 0-2 with adjacent grades in every list (what selection and preference pairs need)."""
    return [(qid + i) % 3 for i in range(len(DOCS))]


def write_dataset(folder: Path, qids: range) -> list[CandidateList]:
    """Queries, qrels and BM25-style candidates (the five known passages, rotated per query) of a TREC set."""
    folder.mkdir(parents=True)
    queries = {
        str(q): f"what about {DOCS[q % len(DOCS)].split()[1]} {DOCS[(q + 2) % len(DOCS)].split()[0]}" for q in qids
    }
    (folder / QUERIES).write_text("".join(json.dumps({"qid": q, "text": t}) + "\n" for q, t in queries.items()))
    rows = "".join(f"{q}\td{i}\t{g}\n" for q in qids for i, g in enumerate(grades_of(q)) if g)
    (folder / QRELS).write_text("query-id\tcorpus-id\tscore\n" + rows)
    lists = [
        CandidateList(
            str(q), queries[str(q)], [Candidate(f"d{i}", DOCS[(i + q) % len(DOCS)]) for i in range(len(DOCS))]
        )
        for q in qids
    ]
    write_candidates(folder / CANDIDATES, lists)
    return lists


def write_data_dir(root: Path) -> Path:
    """dl21 (training: 10 queries) and dl19 (test: 4 queries) under `root`."""
    write_dataset(root / "dl21", range(10, 20))
    write_dataset(root / "dl19", range(1, 5))
    return root
