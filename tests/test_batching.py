"""Which prompts share a pass: longest first, under the padded-token budget; one alone past it."""

from __future__ import annotations

import pytest

from headrank.engine.batching import default_batch_tokens, token_batches
from headrank.ranker import HeadRanker, RankerConfig

from .conftest import DOCS, FLEA_QUERY


def test_groups_stay_within_the_budget_longest_first():
    lengths = [100, 400, 250, 90, 260, 1000]
    groups = token_batches(lengths, max_tokens=800)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert groups[0] == [5]  # longer than the budget: alone
    for group in groups:
        assert len(group) == 1 or len(group) * max(lengths[i] for i in group) <= 800
        assert [lengths[i] for i in group] == sorted((lengths[i] for i in group), reverse=True)
    assert groups[1:] == [[1, 4], [2, 0, 3]]
    assert token_batches(lengths, 1) == [[5], [1], [4], [2], [0], [3]]  # 1: one prompt per pass
    with pytest.raises(ValueError, match="at least 1"):
        token_batches(lengths, 0)


def test_the_default_budget_follows_the_device(tiny):
    assert default_batch_tokens("cpu") == 1 and default_batch_tokens("cuda:1") > 10_000
    assert HeadRanker(tiny).max_batch_tokens == 1
    assert HeadRanker(tiny, RankerConfig(max_batch_tokens=5000)).max_batch_tokens == 5000
    with pytest.raises(ValueError, match="max_batch_tokens"):
        HeadRanker(tiny, RankerConfig(max_batch_tokens=0))


def test_rank_batch_batches_across_queries_and_keeps_each_answer(tiny):
    alone = HeadRanker(tiny, RankerConfig(max_length=150))
    wide = alone.variant(max_batch_tokens=100_000)
    requests = [(FLEA_QUERY, DOCS, list("abcde")), ("what is wifi", DOCS[:2], ["x", "y"])]
    calls = []
    original = wide.score_prompts
    wide.score_prompts = lambda prompts, prefix=None: calls.append(len(prompts)) or original(prompts, prefix)
    batched = wide.rank_batch(requests, progress=False)
    # the first list's bottom sliding window and the second list share a pass; the first list's next windows,
    # each waiting for the one below it, follow one a pass
    assert calls == [2, 1, 1] and batched[0].prompts == 3
    for (query, docs, ids), got in zip(requests, batched):
        want = alone.rank(query, docs, ids)
        assert [r.doc_id for r in got] == [r.doc_id for r in want]
        assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-6)
