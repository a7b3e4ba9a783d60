"""Lists split into windows (headrank/rounds.py): sliding windows, the tournament (each window's leaders go on to a
final window) and the scaled merge, with the lexical model whose right answer is known and the tiny random Qwen3."""

from __future__ import annotations

import pytest

from headrank.engine.prompt import PromptBuilder, PromptTemplate
from headrank.ranker import HeadRanker, RankerConfig
from headrank.results import best_first
from headrank.serve.scheduler import Scheduler

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


@pytest.mark.parametrize("merge", ["sliding", "tournament"])
def test_a_planted_passage_of_the_last_window_reaches_the_top_as_in_one_window(lexical, merge):
    docs = planted_list()
    planted = len(docs) - 1
    one = HeadRanker(lexical, RankerConfig(merge=merge))
    split = HeadRanker(lexical, RankerConfig(max_length=400, merge=merge))
    scaled = HeadRanker(lexical, RankerConfig(max_length=400, merge="scaled"))
    assert len(one.prompts(FLEA_QUERY, docs)) == 1 and len(split.prompts(FLEA_QUERY, docs)) == 4
    assert rank_of(one, docs, planted) <= 10
    assert rank_of(split, docs, planted) <= rank_of(one, docs, planted)
    # the old merge puts each window's leaders on one scale and loses it: what this test would catch
    assert rank_of(scaled, docs, planted) > 10


def test_split_lists_report_their_windows_and_passes(lexical):
    docs = planted_list()
    ranked = HeadRanker(lexical, RankerConfig(max_length=400, merge="tournament")).rank(FLEA_QUERY, docs)
    assert (ranked.windows, ranked.prompts) == (4, 5)
    assert sorted(r.index for r in ranked) == list(range(len(docs)))
    scaled = HeadRanker(lexical, RankerConfig(max_length=400, merge="scaled")).rank(FLEA_QUERY, docs)
    assert (scaled.windows, scaled.prompts) == (4, 4) and scaled.tokens < ranked.tokens
    # 20 passages do not fit 400 tokens: each sliding window holds what fits, and moves up by half of it
    sliding = HeadRanker(lexical, RankerConfig(max_length=400, merge="sliding")).rank(FLEA_QUERY, docs)
    assert (sliding.windows, sliding.prompts) == (6, 6) and sliding.tokens > ranked.tokens
    assert sorted(r.index for r in sliding) == list(range(len(docs)))
    whole = HeadRanker(lexical).rank(FLEA_QUERY, docs)
    assert (whole.windows, whole.prompts) == (1, 1) and whole.tokens > 0


def rankgpt_by_hand(ranker: HeadRanker, query: str, docs: list[str], size: int, step: int) -> list[int]:
    """RankGPT's sliding loop written out: windows of `size` from the bottom up, `step` apart, the last one at the
    top; each window's documents, best first, scored as a list of their own and reordered by those scores."""
    ranking = list(range(len(docs)))
    end = len(docs)
    while True:
        start = max(0, end - size)
        held = ranking[start:end]
        scores = ranker.score(query, [docs[d] for d in held])
        ranking[start:end] = [held[j] for j in best_first(scores)]
        if start == 0:
            return ranking
        end -= step


def test_sliding_windows_are_rankgpts_loop_over_the_same_window_scores(tiny):
    docs = [f"{d} ({i})" for i, d in enumerate(DOCS * 5)]
    whole = HeadRanker(tiny, RankerConfig(merge="sliding", slide_size=6, slide_step=2))
    builder = whole.builder
    sizes = sorted(len(builder.marker_ids(5)) + len(ids) for ids in builder.encode_passages(docs))
    fits_six = builder.fixed_length(FLEA_QUERY) + sum(sizes[-6:])
    sliding = whole.variant(max_length=fits_six)
    assert len(sliding.prompts(FLEA_QUERY, docs)) > 1
    ranked = sliding.rank(FLEA_QUERY, docs)
    assert [r.index for r in ranked] == rankgpt_by_hand(whole, FLEA_QUERY, docs, size=6, step=2)
    assert ranked.prompts == ranked.windows == 11  # windows ending at 25, 23, ..., 7, and the top one
    assert [r.index for r in ranked] != best_first(whole.score(FLEA_QUERY, docs))  # not the one-window ranking


def test_the_scheduler_runs_the_same_rounds_as_rank(tiny):
    ranker = HeadRanker(tiny, RankerConfig(max_length=150, merge="sliding", slide_size=4, slide_step=2))
    requests = [(FLEA_QUERY, DOCS * 3), ("what is wifi", DOCS[:2]), ("goldfish tank", DOCS * 2)]
    assert [len(ranker.prompts(q, d)) > 1 for q, d in requests] == [True, False, True]
    scheduler = Scheduler(ranker, queue_size=8, max_active=8)
    futures = [scheduler.submit(q, d) for q, d in requests]  # queued together: their rounds interleave
    scheduler.start()
    try:
        answers = [f.result(60) for f in futures]
    finally:
        scheduler.stop()
    expected = ranker.score_requests(requests)
    assert answers == expected
    assert [(a.windows, a.prompts, a.tokens) for a in answers] == [(e.windows, e.prompts, e.tokens) for e in expected]
    assert answers[0].prompts > len(ranker.prompts(*requests[0]))  # the chain ran, not only the windows
    alone = [ranker.rank(q, d) for q, d in requests]
    assert [best_first(a) for a in answers] == [[r.index for r in ranked] for ranked in alone]


def test_a_list_of_one_window_scores_alike_under_every_merge(tiny):
    scores = {m: HeadRanker(tiny, RankerConfig(merge=m)).score(FLEA_QUERY, DOCS) for m in ("sliding", "tournament")}
    scores["scaled"] = HeadRanker(tiny, RankerConfig(merge="scaled")).score(FLEA_QUERY, DOCS)
    assert scores["sliding"] == scores["tournament"] == scores["scaled"]  # bit for bit


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
    config = RankerConfig(max_length=150, template=PromptTemplate(max_passage_tokens=24), merge="tournament")
    ranker = HeadRanker(tiny, config)
    docs = DOCS * 3
    run = ranker.run_list(FLEA_QUERY, docs)
    windows = len(run.prompts)
    assert run.advance(ranker.score_many(run.prompts))
    final = run.prompts
    assert len(final) > 1  # five leaders do not fit 150 tokens
    ranked = ranker.rank(FLEA_QUERY, docs)
    assert ranked.windows == windows and ranked.prompts > windows + len(
        final
    )  # a third round decided between the finals' leaders
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
    with pytest.raises(ValueError, match="slide_size must be at least 2 passages, got 1"):
        HeadRanker(tiny, RankerConfig(slide_size=1))
    for step in (0, 20, 25):
        with pytest.raises(ValueError, match=f"slide_step must be from 1 to slide_size - 1 = 19 .*overlap.*got {step}"):
            HeadRanker(tiny, RankerConfig(slide_step=step))
