"""What every reranker shares, with no model behind it: documents in, ranked results out, the checks on the
input, and the tie-stable order. HeadRanker, RankGPT, the dense baseline and the service all speak this."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from headrank.prompt import passage_text

Document = str | Mapping[str, str]


@dataclass(frozen=True)
class RankedDocument:
    document: str
    doc_id: str | int
    score: float
    rank: int
    index: int
    """position of the document in the caller's list."""


@dataclass
class RankedResults:
    query: str
    results: list[RankedDocument] = field(default_factory=list)

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


def check_query(query) -> str:
    if not isinstance(query, str):
        raise TypeError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
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


def ranked_by_scores(
    query: str, documents: Sequence[Document], scores: Sequence[float], doc_ids: Sequence[str | int] | None = None
) -> RankedResults:
    """Best score first; ties keep the input order, so equal scores never reshuffle the first stage."""
    ids = check_doc_ids(documents, doc_ids)
    by_score = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return RankedResults(
        query=query,
        results=[
            RankedDocument(document_text(documents[i], i), ids[i], float(scores[i]), rank + 1, i)
            for rank, i in enumerate(by_score)
        ],
    )
