"""Cheap requests stay cheap: a list's repeated and empty documents are scored once, and a query is held to a
number of tokens, so that no request costs the one worker more than its distinct passages and a bounded query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from headrank.results import Document, document_text

if TYPE_CHECKING:
    from headrank.ranker import HeadRanker

MAX_QUERY_TOKENS = 512
"""the default cap on a query's tokens: real search queries are far shorter (MS MARCO's ~10 tokens, ArguAna's
whole arguments ~250), and the query span is run in every window of a list, so a 6,000-token query would hold
the worker for tens of seconds on a CPU."""


def distinct(documents: Sequence[Document]) -> tuple[list[Document], list[int]]:
    """The distinct passages of a list (by the text the ranker reads: every empty one is the same passage), first
    occurrences in order, and for each document the index of its passage among them."""
    first: dict[str, int] = {}
    kept: list[Document] = []
    where = []
    for i, document in enumerate(documents):
        text = document_text(document, i)
        if text not in first:
            first[text] = len(kept)
            kept.append(document)
        where.append(first[text])
    return kept, where


def capped_query(ranker: HeadRanker, query: str, limit: int, truncate: bool) -> tuple[str, str | None]:
    """The query held to its first `limit` tokens of the served model's tokenizer, and a warning when it was cut;
    ValueError (a 422) instead of a cut when `truncate` is false."""
    [(cut, tokens)] = ranker.cut_to_tokens([query], limit)
    if tokens <= limit:
        return query, None
    if not truncate:
        raise ValueError(f"query: {tokens} tokens, over the query limit ({limit} tokens), and truncate is false")
    return cut, f"query cut to its first {limit} of {tokens} tokens"
