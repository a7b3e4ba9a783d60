"""Training lists from labelled datasets, and the seeded train/validation split by query."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headrank.data import CandidateList, Qrels
from headrank.evaluation.metrics import adjacent_pairs
from headrank.results import document_text


@dataclass
class TrainingList:
    qid: str
    query: str
    texts: list[str]
    grades: np.ndarray
    """grade of each text, in first-stage order."""
    ideal: list[int] = field(default_factory=list)
    """every judged grade of the query (the ideal ranking of nDCG), beyond this list too."""
    relevant_grade: int = 1
    """the lowest grade its dataset counts as relevant (the calibration's label)."""


def training_lists(lists: Sequence[CandidateList], qrels: Qrels, size: int) -> list[TrainingList]:
    """Lists with at least one adjacent-grade pair: the others teach the preference loss nothing."""
    out = []
    for lst in lists:
        head = lst.head(size)
        judged = qrels.get(lst.qid, {})
        grades = np.asarray([judged.get(d, 0) for d in head.docids()], dtype=float)
        if len(adjacent_pairs(grades)[0]):
            texts = [document_text(d, i) for i, d in enumerate(head.documents())]
            out.append(TrainingList(lst.qid, lst.query, texts, grades, sorted(judged.values(), reverse=True)))
    return out


def split_queries(qids: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, validation) by query: the `fraction` of queries with the lowest seeded hash, at least one
    each side when there are two or more. The same qids and seed give the same split on every machine."""
    if len(set(qids)) != len(qids):
        raise ValueError("split_queries: a query id is listed twice")
    ranked = sorted(qids, key=lambda q: (zlib.crc32(f"{seed}:{q}".encode()), q))
    count = min(max(round(fraction * len(qids)), 1), len(qids) - 1) if len(qids) > 1 else 0
    held = set(ranked[:count])
    return [q for q in qids if q not in held], [q for q in qids if q in held]


def held_out(
    lists: Sequence[CandidateList], qrels: Qrels, size: int, fraction: float, seed: int = 0
) -> tuple[list[TrainingList], set[str]]:
    """(usable lists, the query ids held out for validation) of one dataset: `headrank train` and `headrank
    select-heads` call this with the same arguments, so heads are never chosen on a validation query."""
    usable = training_lists(lists, qrels, size)
    if not fraction:
        return usable, set()
    return usable, set(split_queries([i.qid for i in usable], fraction, seed)[1])


def held_out_qids(
    datasets: Mapping[str, int | None], data_dir: Path, size: int, fraction: float, seed: int = 0
) -> set[str]:
    """The query ids `headrank train` holds out of these datasets, each read to its judged-query limit."""
    from headrank.datasets import judged_lists

    held: set[str] = set()
    for name, limit in datasets.items():
        held |= held_out(*judged_lists(name, data_dir, size, limit), size, fraction, seed)[1]
    return held


@dataclass
class TrainingData:
    train: list[TrainingList]
    validation: list[TrainingList]
    datasets: list[str]

    def describe(self) -> dict:
        """What the artifact records: which queries trained it and which chose its checkpoint."""
        return {
            "datasets": self.datasets,
            "lists": len(self.train),
            "qids": [i.qid for i in self.train],
            "validation_qids": [i.qid for i in self.validation],
        }


def load_training_data(
    datasets: Sequence[str], data_dir: Path, size: int, fraction: float, seed: int = 0, limit: int | None = None
) -> TrainingData:
    """Usable lists of each dataset (the first `limit` judged queries), each dataset split on its own so both
    sides hold every source in proportion."""
    from headrank.datasets import judged_lists, spec

    train: list[TrainingList] = []
    validation: list[TrainingList] = []
    for name in datasets:
        usable, held = held_out(*judged_lists(name, data_dir, size, limit), size, fraction, seed)
        for item in usable:
            item.relevant_grade = spec(name).relevant_grade
        train += [i for i in usable if i.qid not in held]
        validation += [i for i in usable if i.qid in held]
    if not train:
        raise ValueError("no training list has two candidates whose grades differ by one")
    return TrainingData(train, validation, list(datasets))
