"""The generative baseline: the strict parser, the sliding window (fake generator), and the tiny model."""

from __future__ import annotations

import re

import pytest

from headrank.baselines.rankgpt import RankGPT, RankGPTConfig, parse_permutation, sliding_windows
from headrank.evaluation.experiment import describe_ranker

from .conftest import DOCS, FLEA_QUERY


@pytest.mark.parametrize(
    "text,order",
    [
        ("[2] > [3] > [1]", [1, 2, 0]),
        ("  [ 2 ]>[3] >[1]</s> sure!", [1, 2, 0]),
        ("Ranking: [3] > [1] > [2]\nThe most relevant is [3]", None),  # repeated once trailing text names one
        ("2 > 3 > 1", [1, 2, 0]),
    ],
)
def test_parser_reads_full_permutations(text, order):
    parsed = parse_permutation(text, 3)
    if order is None:
        assert not parsed.ok and parsed.reason == "repeated ids"
    else:
        assert parsed.ok and parsed.order == order


@pytest.mark.parametrize(
    "text,reason",
    [
        ("[2] > [1]", "missing ids [3]"),
        ("[2] > [2] > [1]", "repeated ids"),
        ("[2] > [4] > [1] > [3]", "invalid ids [4]"),
        ("[0] > [1] > [2]", "invalid ids [0]"),
        ("I cannot rank these.", "no identifiers"),
        ("", "no identifiers"),
    ],
)
def test_parser_failures_keep_the_input_order(text, reason):
    parsed = parse_permutation(text, 3)
    assert not parsed.ok and parsed.reason == reason and parsed.order == [0, 1, 2]


def test_sliding_windows_go_bottom_up():
    assert sliding_windows(20, 20, 10) == [(0, 20)]
    assert sliding_windows(5, 20, 10) == [(0, 5)]
    assert sliding_windows(100, 20, 10) == [(s, s + 20) for s in range(80, -1, -10)]
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]
    assert sliding_windows(0, 20, 10) == []
    with pytest.raises(ValueError, match="step"):
        RankGPTConfig(window=4, step=5)


def _keyword_generator(word: str):
    """Puts the passages that contain `word` first, the others after, each group in input order."""

    def generate(query, passages):
        hits = [i for i, p in enumerate(passages, 1) if word in p]
        rest = [i for i, p in enumerate(passages, 1) if word not in p]
        return " > ".join(f"[{i}]" for i in hits + rest)

    return generate


def test_sliding_window_bubbles_a_passage_from_the_bottom_to_the_top(tiny):
    docs = [f"filler passage number {i}" for i in range(24)] + ["fleas live a year"]
    seen = []

    def generate(query, passages):
        seen.append(len(passages))
        return _keyword_generator("fleas")(query, passages)

    ranker = RankGPT(tiny, RankGPTConfig(window=6, step=3), generator=generate)
    ranked = ranker.rank(FLEA_QUERY, docs, doc_ids=[f"d{i}" for i in range(25)])
    assert ranked[0].doc_id == "d24" and ranked[0].rank == 1
    assert [r.doc_id for r in ranked][1:] == [f"d{i}" for i in range(24)]
    assert seen == [6] * 7 + [4]  # windows (19,25), (16,22) ... (1,7), then (0,4)
    assert ranker.formatting_success_rate == 1.0 and ranker.stats.windows == 8
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


def test_a_failed_window_keeps_its_order_and_is_counted(tiny):
    answers = iter(["[1] > [1] > [2]", "[3] > [2] > [1]"])
    ranker = RankGPT(tiny, RankGPTConfig(window=3, step=2), generator=lambda q, p: next(answers))
    ranked = ranker.rank(FLEA_QUERY, ["a", "b", "c", "d", "e"])
    # window (2,5) fails and keeps c d e; window (0,3) over a b c reverses it
    assert [r.document for r in ranked] == ["c", "b", "a", "d", "e"]
    assert ranker.formatting_success_rate == 0.5
    info = describe_ranker(ranker)
    assert info["formatting_success_rate"] == 0.5 and info["formatting_failures"] == {"repeated ids": 1}
    assert info["failed_answers"] == ["[1] > [1] > [2]"]


def test_the_tiny_model_generates_and_failures_are_handled(tiny):
    ranker = RankGPT(tiny, RankGPTConfig(window=4, step=2, max_passage_tokens=16))
    prompt = tiny.tokenizer.decode(ranker.prompt_ids(FLEA_QUERY, DOCS[:4]))
    assert re.findall(r"\[\d\] ", prompt)[:4] == ["[1] ", "[2] ", "[3] ", "[4] "] and FLEA_QUERY in prompt
    ranked = ranker.rank(FLEA_QUERY, DOCS, doc_ids=list("abcde"))
    assert sorted(r.doc_id for r in ranked) == list("abcde")
    assert ranker.stats.windows == 2 and 0.0 <= ranker.formatting_success_rate <= 1.0
    assert describe_ranker(ranker)["layers_run"] == 4


def test_bad_input_is_refused(tiny):
    ranker = RankGPT(tiny, generator=_keyword_generator("x"))
    with pytest.raises(ValueError, match="query is empty"):
        ranker.rank(" ", DOCS)
    with pytest.raises(ValueError, match="2 doc_ids for 5 documents"):
        ranker.rank(FLEA_QUERY, DOCS, doc_ids=["a", "b"])
    with pytest.raises(TypeError, match="document 0"):
        ranker.rank(FLEA_QUERY, [3])
    assert len(ranker.rank(FLEA_QUERY, [])) == 0


def test_generation_cost_counts_tokens_and_splits_prefill_from_decoding(tiny):
    ranker = RankGPT(tiny, RankGPTConfig(window=4, step=2, max_passage_tokens=16, max_new_tokens=6))
    answer = ranker.generate(FLEA_QUERY, DOCS[:4])
    cost = ranker.cost
    assert cost.windows == 1 and cost.prompt_tokens == len(ranker.prompt_ids(FLEA_QUERY, DOCS[:4]))
    assert 1 <= cost.generated_tokens <= 6 and cost.forward_passes == cost.generated_tokens
    assert len(tiny.tokenizer.encode(answer, add_special_tokens=False)) <= cost.generated_tokens
    assert cost.prefill_seconds > 0 and (cost.decode_seconds > 0) == (cost.generated_tokens > 1)
    first = cost.generated_tokens
    ranker.rank(FLEA_QUERY, DOCS)  # two more windows add to the same account
    assert ranker.cost.windows == 3 and ranker.cost.generated_tokens >= first + 2
