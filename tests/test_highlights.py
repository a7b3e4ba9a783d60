"""Evidence spans: sentences by character offsets into the text as given, weighted by the heads' attention."""

from __future__ import annotations

import pytest

from headrank.engine.prompt import PromptTemplate
from headrank.engine.testing import DOCS, FLEA_QUERY, tiny_backbone
from headrank.highlights import document_highlights, sentence_spans, token_offsets, token_weights
from headrank.ranker import HeadRanker, RankerConfig

PLANTED = "wifi and bluetooth are wireless technologies. fleas live up to a year on the host.\ngoldfish grow in a tank"


def test_sentences_are_spans_of_the_text_without_their_blanks():
    text = "  One clause; another!\n\nA third one?  last bit"
    assert [text[a:b] for a, b in sentence_spans(text)] == ["One clause;", "another!", "A third one?", "last bit"]
    assert sentence_spans("   \n ") == []


def test_token_offsets_point_into_the_text_as_given(tiny):
    tokenizer = tiny.tokenizer
    text = "fleas  live\n up to a   year"
    offsets = token_offsets(tokenizer, text, 100, None)
    assert "".join(text[a:b] for a, b in offsets).split() == ["fleas", "live", "up", "to", "a", "year"]
    cut = token_offsets(tokenizer, text, 100, max_words=4)  # the prompt held "fleas live up to", rejoined
    assert "".join(text[a:b] for a, b in cut).split() == ["fleas", "live", "up", "to"]
    assert len(token_offsets(tokenizer, text, 2, None)) == 2


def test_sentence_weights_are_shares_of_the_attention_on_their_tokens():
    text = "aaaa. bbb. cc d."  # a token counts for the sentence of its last character; negative counts as none
    spans = document_highlights(text, [(0, 5), (5, 9), (9, 13), (13, 16)], [1.0, 2.0, -5.0, 1.0])
    assert [(text[h.start : h.end], h.weight) for h in spans] == [("bbb.", 0.5), ("aaaa.", 0.25), ("cc d.", 0.25)]
    assert [h.start for h in document_highlights(text, [(0, 5)], [0.0], top=2)] == [0, 6]  # no attention: 0s


def test_the_lexical_heads_point_at_the_planted_sentence(lexical):
    ranker = HeadRanker(lexical)
    ranked = ranker.rank(FLEA_QUERY, [DOCS[0], PLANTED, DOCS[3]], highlights=True)
    planted = next(r for r in ranked if r.index == 1)
    top = planted.highlights[0]
    assert PLANTED[top.start : top.end] == "fleas live up to a year on the host."
    assert [PLANTED[h.start : h.end] for h in planted.highlights[1:]] != []
    assert sum(h.weight for h in planted.highlights) == pytest.approx(1.0)
    assert [r.index for r in ranked] == [r.index for r in ranker.rank(FLEA_QUERY, [DOCS[0], PLANTED, DOCS[3]])]
    assert all(r.highlights is None for r in ranker.rank(FLEA_QUERY, DOCS))  # opt-in


def test_highlights_match_the_token_attention_across_windows_and_truncation():
    template = PromptTemplate(max_passage_tokens=12)
    ranker = HeadRanker(tiny_backbone(), RankerConfig(max_length=150, template=template))
    documents = [PLANTED, *DOCS, PLANTED + " fleas"]
    prompts = ranker.prompts(FLEA_QUERY, documents)
    assert len(prompts) > 1
    ranked = {r.index: r for r in ranker.rank(FLEA_QUERY, documents, highlights=True)}
    weights = ranker.heads.weight_vector()
    import torch

    for prompt in prompts:
        attention = ranker.token_attention([prompt])[0]
        per_passage = token_weights(attention, prompt, torch.tensor(weights))
        for position, doc in enumerate(prompt.order):
            text = documents[doc]
            offsets = token_offsets(ranker.builder.tokenizer, text, 12, None)
            assert len(per_passage[position]) == len(offsets) <= 12
            expected = document_highlights(text, offsets, per_passage[position])
            got = ranked[doc].highlights
            assert [(h.start, h.end) for h in got] == [(h.start, h.end) for h in expected]
            assert [h.weight for h in got] == pytest.approx([h.weight for h in expected], abs=1e-5)
    unread = ranked[0].highlights  # 12 tokens do not reach the last sentence of PLANTED: it gets nothing
    assert {PLANTED[h.start : h.end]: h.weight for h in unread}["goldfish grow in a tank"] == 0.0


def test_every_http_shape_answers_highlights_only_when_asked(lexical):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from headrank.serve.app import ServeConfig, create_app

    from .conftest import served

    ranker = HeadRanker(lexical)
    documents = [DOCS[0], PLANTED, DOCS[3]]
    expected = {
        r.index: [(h.start, h.end) for h in r.highlights] for r in ranker.rank(FLEA_QUERY, documents, highlights=True)
    }
    with served(create_app(ranker, ServeConfig(model_name="lexical"))) as client:
        for path, body, key in (
            ("/v1/rerank", {"query": FLEA_QUERY, "documents": documents, "top_n": 2}, "results"),
            ("/v2/rerank", {"query": FLEA_QUERY, "documents": documents, "top_n": 2}, "results"),
            ("/rerank", {"query": FLEA_QUERY, "texts": documents}, None),
        ):
            plain = client.post(path, json=body).json()
            assert all("highlights" not in r for r in (plain[key] if key else plain))
            answer = client.post(path, json={**body, "return_highlights": True})
            assert answer.status_code == 200, answer.text
            results = answer.json()[key] if key else answer.json()
            assert {r["index"]: [(h["start"], h["end"]) for h in r["highlights"]] for r in results} == {
                r["index"]: expected[r["index"]] for r in results
            }
            planted = next(r for r in results if r["index"] == 1)["highlights"][0]
            assert PLANTED[planted["start"] : planted["end"]] == "fleas live up to a year on the host."
        titled = {"query": FLEA_QUERY, "documents": [{"title": "Fleas", "text": PLANTED}], "return_highlights": True}
        spans = client.post("/v1/rerank", json=titled).json()["results"][0]["highlights"]
        assert {("Fleas\n" + PLANTED)[h["start"] : h["end"]] for h in spans} >= {"Fleas", "goldfish grow in a tank"}
