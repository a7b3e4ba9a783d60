"""What every reranker shares, with no model behind it: documents in, ranked results out, the checks on the
input, and the tie-stable order. HeadRanker, RankGPT, the dense baseline and the service all speak this."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from headrank.engine.prompt import passage_text

Document = str | Mapping[str, str]


@dataclass(frozen=True)
class Highlight:
    """A span of a document's text, [start, end) in characters, and its share of the heads' attention to it."""

    start: int
    end: int
    weight: float


@dataclass(frozen=True)
class RankedDocument:
    document: str
    doc_id: str | int
    score: float
    """the reranker's raw score (for HeadRanker: the selected heads' calibrated attention, summed)."""
    rank: int
    index: int
    """position of the document in the caller's list."""
    relevance: float = 0.5
    """`score` mapped into (0, 1) with the ranking kept (`relevance_scores`): what Cohere/Jina/TEI clients get.
    Relative to its list: no threshold means the same for two lists."""
    calibrated: float | None = None
    """P(relevant) from a ranker with a calibration (headrank/calibration.py; its artifact's calibration.json):
    comparable across queries and lists, increasing in `score`. None without one."""
    highlights: tuple[Highlight, ...] | None = None
    """when asked for (`HeadRanker.rank(..., highlights=True)`): the document's sentences, heaviest first, by
    the selected heads' attention (headrank/highlights.py)."""


@dataclass
class RankedResults:
    query: str
    results: list[RankedDocument] = field(default_factory=list)
    windows: int = 1
    """windows the list was split into to fit the model (1: one forward pass saw every document; for the sliding
    merge, the sliding windows run)."""
    prompts: int = 1
    """prompts scored (forward passes): every round of a split list (headrank/rounds.py); 0 for an empty list."""
    tokens: int = 0
    """tokens of those prompts, as the ranker counts them (0 when the reranker does not say)."""

    def top_k(self, k: int) -> list[RankedDocument]:
        return self.results[:k]

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> RankedDocument:
        return self.results[i]


class Reranker(Protocol):
    """What the experiment helpers need: HeadRanker, RankGPT, the dense baseline, or any object with `rank`."""

    def rank(
        self, query: str, documents: Sequence[Document], doc_ids: Sequence[str | int] | None = None
    ) -> RankedResults: ...


INVISIBLE = r"\s\x00-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff"
"""What a text may hold and still be empty (the body of a regex class): Unicode whitespace (as `str.isspace`),
control characters (NUL and the rest of Cc) and the zero-width characters U+200B-U+200D, U+2060 and U+FEFF.
Python's re, pydantic's Rust regex and ECMAScript read it alike, so the server's schema states the same rule
that the library applies."""
VISIBLE = f"[^{INVISIBLE}]"
_VISIBLE = re.compile(VISIBLE)


def is_blank(text: str) -> bool:
    """Nothing visible in `text` (see INVISIBLE): one rule for the library, the CLI and the server."""
    return _VISIBLE.search(text) is None


def check_query(query) -> str:
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    if is_blank(query):
        raise ValueError("query is empty")
    return query


def document_text(doc, i: int) -> str:
    if isinstance(doc, str):
        return doc
    if isinstance(doc, Mapping) and isinstance(doc.get("text"), str):
        title = doc.get("title")
        return passage_text(doc["text"], title if isinstance(title, str) else None)
    raise TypeError(f"document {i} must be a string or a mapping with a 'text' string, got {type(doc).__name__}")


def check_doc_ids(documents: Sequence[Document], doc_ids: Sequence[str | int] | None) -> list[str | int]:
    if doc_ids is not None and len(doc_ids) != len(documents):
        raise ValueError(f"{len(doc_ids)} doc_ids for {len(documents)} documents")
    return list(doc_ids) if doc_ids is not None else list(range(len(documents)))


def relevance_scores(scores: Sequence[float]) -> list[float]:
    """Scores mapped into (0, 1) for clients that expect Cohere/Jina/TEI-style relevance: the logistic of each
    score's distance from the list's mean in units of the list's standard deviation. Strictly increasing in the
    score, so the ranking is kept; scale-free, so it means the same for any head set or model. It is relative
    to the list (a list of equals is all 0.5), not a calibrated probability of relevance."""
    if not scores:
        return []
    mean = sum(scores) / len(scores)
    spread = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if spread == 0 or not math.isfinite(spread):
        return [0.5] * len(scores)
    return [1.0 / (1.0 + math.exp(-(s - mean) / spread)) for s in scores]


def ranked_by_scores(
    query: str,
    documents: Sequence[Document],
    scores: Sequence[float],
    doc_ids: Sequence[str | int] | None = None,
    calibrated: Sequence[float] | None = None,
) -> RankedResults:
    """Best score first; ties keep the input order, so equal scores never reshuffle the first stage.
    `calibrated` (a calibrated ranker's P(relevant) per document) fills `RankedDocument.calibrated`."""
    ids = check_doc_ids(documents, doc_ids)
    relevance = relevance_scores(scores)
    return RankedResults(
        query=query,
        results=[
            RankedDocument(
                document_text(documents[i], i),
                ids[i],
                float(scores[i]),
                rank + 1,
                i,
                relevance[i],
                None if calibrated is None else float(calibrated[i]),
            )
            for rank, i in enumerate(best_first(scores))
        ],
    )


class ScoredList(list[float]):
    """A list's scores in the caller's order (a plain list of them, for every caller that wants only those) and,
    from a calibrated ranker, each document's P(relevant) as `relevance` (None without a calibration)."""

    def __init__(self, scores: Sequence[float], relevance: Sequence[float] | None = None):
        super().__init__(scores)
        self.relevance = None if relevance is None else list(relevance)
        self.windows, self.prompts, self.tokens = 1, 0, 0
        """windows the list was split into; prompts scored (every round of a split list); tokens of
        those prompts, each query span and its N/A twin included (set by `costing`)."""

    def costing(self, windows: int, prompts: int, tokens: int) -> ScoredList:
        self.windows, self.prompts, self.tokens = windows, prompts, tokens
        return self

    @property
    def scores(self) -> list[float]:
        return list(self)


def best_first(scores: Sequence[float], top_n: int | None = None) -> list[int]:
    """Indices by descending score; ties keep the input order, so equal scores never reshuffle the first stage."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:top_n]
