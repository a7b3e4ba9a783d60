"""Lists split into windows: the tournament (each window's leaders go on to a final window) and the scaled merge it
replaced, with the lexical model whose right answer is known."""

from __future__ import annotations

import pytest

from headrank.engine.prompt import PromptBuilder, PromptTemplate
from headrank.ranker import HeadRanker, RankerConfig

from .conftest import DOCS, FLEA_QUERY

FILLER = [d for d in DOCS if "fleas" not in d]
LURES = ["how long is the range of wifi", "how long did the war go on", "do goldfish grow long"]
PLANTED = "fleas live up to a year on the host"


def planted_list() -> list[str]:
    """Forty-eight passages, best first: a lure that shares "how long" with the query ahead of three fillers,
    twelve times, then the one passage about fleas living, last in the first stage's order."""
    docs = []
    for i in range(12):
        docs += [LURES[i % 3], *FILLER[:3]]
    return [*docs, PLANTED]


def rank_of(ranker: HeadRanker, docs: list[str], index: int) -> int:
    return [r.index for r in ranker.rank(FLEA_QUERY, docs)].index(index) + 1


def test_a_planted_passage_of_the_last_window_reaches_the_top_as_in_one_window(lexical):
    docs = planted_list()
    planted = len(docs) - 1
    one = HeadRanker(lexical)
    tournament = HeadRanker(lexical, RankerConfig(max_length=400))
    scaled = HeadRanker(lexical, RankerConfig(max_length=400, merge="scaled"))
    assert len(one.prompts(FLEA_QUERY, docs)) == 1 and len(tournament.prompts(FLEA_QUERY, docs)) == 4
    assert rank_of(one, docs, planted) <= 10
    assert rank_of(tournament, docs, planted) <= rank_of(one, docs, planted)
    # the old merge puts each window's leaders on one scale and loses it: what this test would catch
    assert rank_of(scaled, docs, planted) > 10


def test_split_lists_report_their_windows_and_passes(lexical):
    docs = planted_list()
    ranked = HeadRanker(lexical, RankerConfig(max_length=400)).rank(FLEA_QUERY, docs)
    assert (ranked.windows, ranked.prompts) == (4, 5)
    assert sorted(r.index for r in ranked) == list(range(len(docs)))
    scaled = HeadRanker(lexical, RankerConfig(max_length=400, merge="scaled")).rank(FLEA_QUERY, docs)
    assert (scaled.windows, scaled.prompts) == (4, 4) and scaled.tokens < ranked.tokens
    whole = HeadRanker(lexical).rank(FLEA_QUERY, docs)
    assert (whole.windows, whole.prompts) == (1, 1) and whole.tokens > 0


def test_the_final_window_holds_whole_rounds_of_leaders_in_input_order(tiny):
    ranker = HeadRanker(tiny, RankerConfig(max_length=200))
    windows = ranker.prompts(FLEA_QUERY, DOCS * 4)
    assert len(windows) >= 3
    ranked = [list(range(len(w.order)))[::-1] for w in windows]  # each window's last position is its best
    builder: PromptBuilder = ranker.builder
    two = builder.leaders(windows, ranked, 10_000, per_window=2)
    expected = {d for w in windows for d in w.order[-2:]}
    assert set(two.order) == expected and len(two.order) == 2 * len(windows)
    flat = [d for w in windows for d in w.order]
    assert two.order == sorted(two.order, key=flat.index)  # the list's own order, kept
    assert two.query_ids == windows[0].query_ids and two.calibration_ids == windows[0].calibration_ids
    for d, span in zip(two.order, two.passage_spans):
        source = next(w for w in windows if d in w.order)
        assert two.prefix_ids[slice(*span)] == source.prefix_ids[slice(*source.passage_spans[source.order.index(d)])]
    assert builder.leaders(windows, ranked, len(two.input_ids)).order == two.order  # as many rounds as fit
    assert len(builder.leaders(windows, ranked, len(two.input_ids) - 1).order) == len(windows)


def test_leaders_that_do_not_fit_one_window_play_further_rounds(tiny):
    ranker = HeadRanker(tiny, RankerConfig(max_length=150, template=PromptTemplate(max_passage_tokens=24)))
    docs = DOCS * 3
    windows = ranker.prompts(FLEA_QUERY, docs)
    final = ranker.next_round(windows, ranker.score_many(windows))
    assert len(final) > 1  # five leaders do not fit 150 tokens
    ranked = ranker.rank(FLEA_QUERY, docs)
    assert ranked.prompts > ranked.windows + len(final)  # a third round decided between the finals' leaders
    assert sorted(r.index for r in ranked) == list(range(len(docs)))
    assert ranker.score_batch([(FLEA_QUERY, docs), ("what is wifi", DOCS)]) == [
        ranker.score(FLEA_QUERY, docs),
        ranker.score("what is wifi", DOCS),
    ]


def test_bad_merge_settings_are_refused(tiny):
    with pytest.raises(ValueError, match="merge must be one of"):
        HeadRanker(tiny, RankerConfig(merge="average"))
    with pytest.raises(ValueError, match="leaders must be at least 1"):
        HeadRanker(tiny, RankerConfig(leaders=0))
