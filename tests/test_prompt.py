from __future__ import annotations

import pytest

from headrank.engine.prompt import PromptBuilder, PromptError, PromptTemplate, input_order

from .conftest import DOCS, FLEA_QUERY


def test_spans_decode_to_the_passages(tiny):
    builder = PromptBuilder(tiny.tokenizer)
    order = [4, 3, 2, 1, 0]
    prompt = builder.build(FLEA_QUERY, builder.encode_passages(DOCS), order)
    for (start, end), doc in zip(prompt.passage_spans, order):
        assert tiny.tokenizer.decode(prompt.prefix_ids[start:end]).strip() == DOCS[doc]
    text = tiny.tokenizer.decode(prompt.input_ids)
    assert text.startswith("<|im_start|>user\nHere are some passages:\n\n[1] what is the range of wifi")
    assert tiny.tokenizer.decode(prompt.query_ids).endswith(f"Query: {FLEA_QUERY}<|im_end|>\n<|im_start|>assistant\n")
    assert "Query: N/A<|im_end|>" in tiny.tokenizer.decode(prompt.calibration_ids)


def test_title_and_no_chat_template(tiny):
    builder = PromptBuilder(tiny.tokenizer, PromptTemplate(use_chat_template=False))
    prompt = builder.build("q", builder.encode_passages(["Fleas\nthey live a year"]), [0])
    assert tiny.tokenizer.decode(prompt.input_ids).startswith("Here are some passages:\n\n[1] Fleas\nthey live")


def test_truncation_spares_the_query(tiny):
    long_query = "what is the range of wifi and bluetooth " * 5
    builder = PromptBuilder(tiny.tokenizer, PromptTemplate(max_passage_tokens=3))
    prompt = builder.build(long_query, builder.encode_passages(DOCS), [0, 1])
    assert all(end - start == 3 for start, end in prompt.passage_spans)
    assert long_query in tiny.tokenizer.decode(prompt.query_ids)
    words = PromptBuilder(tiny.tokenizer, PromptTemplate(max_passage_words=2, max_passage_tokens=None))
    ids = words.encode_passages(["fleas live up to a year"])[0]
    assert tiny.tokenizer.decode(ids) == " fleas live"


def test_orders():
    assert input_order(4, "forward") == [0, 1, 2, 3]
    assert input_order(4, "reverse") == [3, 2, 1, 0]
    assert sorted(input_order(9, "random", seed=1)) == list(range(9))
    assert input_order(9, "random", seed=1) == input_order(9, "random", seed=1)
    with pytest.raises(PromptError):
        input_order(3, "sideways")


def test_windows_split_a_list_that_does_not_fit(tiny):
    builder = PromptBuilder(tiny.tokenizer)
    ids = builder.encode_passages(DOCS * 4)
    order = list(range(20))
    full = builder.build(FLEA_QUERY, ids, order)
    assert builder.windows(FLEA_QUERY, ids, order, 10_000) == [order]
    limit = len(full.input_ids) // 2
    windows = builder.windows(FLEA_QUERY, ids, order, limit)
    assert len(windows) >= 2 and sum(windows, []) == order
    assert max(map(len, windows)) - min(map(len, windows)) <= 1
    for window in windows:
        assert len(builder.build(FLEA_QUERY, ids, window).input_ids) <= limit
    with pytest.raises(PromptError, match="max_passage_tokens"):
        builder.windows(FLEA_QUERY, ids, order, builder.fixed_length(FLEA_QUERY) + 2)
