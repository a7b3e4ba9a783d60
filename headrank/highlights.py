"""Evidence spans: which sentences of each passage the selected heads read when the query looked at the list.

The pass that scores a list holds, per passage token, the attention of the query span minus that of the "N/A"
span (ICR's calibration), weighted over the selected heads as the score is. Summed per sentence (by the
tokenizer's character offsets into the text as given), it says where in a passage the score came from. Tokens
past the passage limit (`max_passage_tokens`) were never read: their text gets no weight."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

import torch

from headrank.engine.prompt import ListwisePrompt
from headrank.results import Highlight

_SENTENCE = re.compile(r"[^.!?;\n]*(?:[.!?;]+|\n+|$)")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each sentence or clause (ended by . ! ? ; or a line break), surrounding blanks left out."""
    spans = []
    for match in _SENTENCE.finditer(text):
        start, end = match.start(), match.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start:
            spans.append((start, end))
    return spans


def token_offsets(tokenizer, text: str, count: int, max_words: int | None) -> list[tuple[int, int]]:
    """Character offsets in `text` of the first `count` tokens the prompt holds for it (`encode_passages`
    tokenizes " " + text, after cutting it to `max_words` words rejoined by single spaces)."""
    words = list(re.finditer(r"\S+", text))[:max_words] if max_words is not None else None
    shown = " ".join(w.group() for w in words) if words is not None else text
    where = list(range(len(text) + 1))  # position in `text` of each character of `shown`, and of its end
    if words is not None:
        where = [w.start() + k for w in words for k in range(len(w.group()) + 1)] or [0]
        where[-1] = words[-1].end() if words else 0
    offsets = tokenizer(" " + shown, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [(where[max(a - 1, 0)], where[max(b - 1, 0)]) for a, b in offsets[:count]]


def document_highlights(
    text: str, offsets: Sequence[tuple[int, int]], weights: Sequence[float], top: int | None = None
) -> list[Highlight]:
    """Sentences of `text` by the heads' attention on their tokens (a token counts for the sentence of its last
    character; negative attention counts as none), as shares of the passage's total, heaviest first."""
    spans = sentence_spans(text)
    starts = [a for a, _ in spans]
    mass = [0.0] * len(spans)
    for (_, end), weight in zip(offsets, weights):
        s = bisect.bisect_right(starts, end - 1) - 1
        if s >= 0 and end - 1 < spans[s][1]:
            mass[s] += max(float(weight), 0.0)
    total = sum(mass)
    shares = [m / total if total > 0 else 0.0 for m in mass]
    order = sorted(range(len(spans)), key=lambda s: (-shares[s], s))[:top]
    return [Highlight(spans[s][0], spans[s][1], shares[s]) for s in order]


def token_weights(attention: torch.Tensor, prompt: ListwisePrompt, weights: torch.Tensor) -> list[list[float]]:
    """Per passage (input position), the weighted calibrated attention of each of its tokens. `attention` is one
    prompt's [query/N/A span, heads, prefix tokens] (`HeadRanker.token_attention`)."""
    tokens = attention[0] - attention[1] if attention.shape[0] > 1 else attention[0]
    combined = (weights.to(tokens.dtype)[:, None] * tokens).sum(dim=0).float().cpu()
    return [combined[start:end].tolist() for start, end in prompt.passage_spans]


def prompt_highlights(
    attention: torch.Tensor,
    prompt: ListwisePrompt,
    weights: torch.Tensor,
    texts: Sequence[str],
    tokenizer,
    max_words: int | None,
    top: int | None = None,
) -> dict[int, list[Highlight]]:
    """Each passage of one scored prompt (by document index) with its sentences by the heads' attention, from
    the prompt's `token_attention` row; `texts` are the list's documents as given."""
    per_passage = token_weights(attention, prompt, weights.to(attention.device))
    out = {}
    for position, doc in enumerate(prompt.order):
        tokens = per_passage[position]
        offsets = token_offsets(tokenizer, texts[doc], len(tokens), max_words)
        out[doc] = document_highlights(texts[doc], offsets, tokens, top)
    return out
