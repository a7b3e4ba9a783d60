"""The listwise prompt, built from separately tokenized pieces so that every span is exact."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from headrank.engine import defaults

ORDERS = ("reverse", "forward", "random")
CALIBRATION_QUERY = "N/A"
_SENTINEL = "\x00HEADRANK\x00"


class PromptError(ValueError):
    """A list that cannot be put into the prompt as asked."""


@dataclass(frozen=True)
class PromptTemplate:
    """The wording of the prompt (DESIGN.md); `{index}` and `{query}` are filled in."""

    header: str = "Here are some passages:"
    marker: str = "\n\n[{index}]"
    instruction: str = (
        "\n\nPlease find information that is relevant to the following query in the passages above.\n\nQuery: {query}"
    )
    use_chat_template: bool = True
    max_passage_tokens: int | None = defaults.MAX_PASSAGE_TOKENS
    max_passage_words: int | None = None

    @property
    def passage_limit(self) -> str:
        """The limits a passage is cut to, in words: "256 tokens", "100 words and 256 tokens", or "none"."""
        limits = ((self.max_passage_words, "words"), (self.max_passage_tokens, "tokens"))
        return " and ".join(f"{n} {unit}" for n, unit in limits if n is not None) or "none"


@dataclass
class ListwisePrompt:
    """Token ids of one list; the query span runs from `query_start` to the end."""

    prefix_ids: list[int]
    """chat head, header and passages: shared by the query and the calibration pass."""
    query_ids: list[int]
    """late instruction, query and chat tail: the query span Q."""
    calibration_ids: list[int]
    """the same span with the query replaced by "N/A"."""
    passage_spans: list[tuple[int, int]]
    """[start, end) of each passage's tokens in prefix_ids, in input order."""
    order: list[int]
    """order[p] = index (into the caller's documents) of the passage at input position p."""

    @property
    def query_start(self) -> int:
        return len(self.prefix_ids)

    @property
    def input_ids(self) -> list[int]:
        return self.prefix_ids + self.query_ids


def passage_text(text: str, title: str | None = None) -> str:
    return f"{title}\n{text}" if title else text


def input_order(n: int, order: str, seed: int = 0) -> list[int]:
    """Input positions -> document indices. Documents arrive in first-stage order (best first)."""
    if order == "forward":
        return list(range(n))
    if order == "reverse":
        return list(range(n - 1, -1, -1))
    if order == "random":
        perm = list(range(n))
        random.Random(seed).shuffle(perm)
        return perm
    raise PromptError(f"order must be one of {ORDERS}, not {order!r}")


class PromptBuilder:
    """Tokenizes the fixed pieces once; builds prompts for any query and passage list."""

    def __init__(self, tokenizer, template: PromptTemplate | None = None):
        self.tokenizer = tokenizer
        self.template = template or PromptTemplate()
        head, tail = "", ""
        if self.template.use_chat_template and getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": _SENTINEL}],
                tokenize=False,
                add_generation_prompt=True,
                enable_thinking=False,
            )
            head, tail = rendered.split(_SENTINEL)
        self.head_ids = self._encode(head) + self._encode(self.template.header)
        self.tail_ids = self._encode(tail)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def cut(self, texts: Sequence[str], limit: int) -> list[tuple[str, int]]:
        """Each text held to its first `limit` tokens (decoded back to text) and its length in tokens uncut."""
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        return [
            (text if len(ids) <= limit else self.tokenizer.decode(ids[:limit]), len(ids))
            for text, ids in zip(texts, encoded)
        ]

    def overlong(self, passages: Sequence[str]) -> list[tuple[int, int]]:
        """(index, tokens uncut) of each passage the template's limits would cut."""
        whole = PromptBuilder(self.tokenizer, replace(self.template, max_passage_tokens=None, max_passage_words=None))
        pairs = zip(whole.encode_passages(passages), self.encode_passages(passages))
        return [(i, len(full)) for i, (full, cut) in enumerate(pairs) if len(full) != len(cut)]

    def encode_passages(self, passages: Sequence[str]) -> list[list[int]]:
        """Token ids of each passage (with its leading space), truncated by words then tokens."""
        template = self.template
        texts = []
        for text in passages:
            if template.max_passage_words is not None:
                text = " ".join(text.split()[: template.max_passage_words])
            texts.append(" " + text)
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        if template.max_passage_tokens is not None:
            encoded = [ids[: template.max_passage_tokens] for ids in encoded]
        return encoded

    def suffix_ids(self, query: str) -> list[int]:
        return self._encode(self.template.instruction.format(query=query)) + self.tail_ids

    def fixed_length(self, query: str) -> int:
        """Tokens that every window of this query holds besides its passages."""
        return len(self.head_ids) + max(len(self.suffix_ids(query)), len(self.suffix_ids(CALIBRATION_QUERY)))

    def marker_ids(self, position: int) -> list[int]:
        return self._encode(self.template.marker.format(index=position + 1))

    def build(self, query: str, passage_ids: Sequence[list[int]], order: Sequence[int]) -> ListwisePrompt:
        """Assemble a prompt; `passage_ids[d]` are document d's tokens, placed at the positions `order` gives."""
        return self._assemble(passage_ids, order, self.suffix_ids(query), self.suffix_ids(CALIBRATION_QUERY))

    def rebuild(
        self, like: ListwisePrompt, passage_ids: Sequence[list[int]] | dict[int, list[int]], order: Sequence[int]
    ) -> ListwisePrompt:
        """A prompt of `like`'s query over the documents `order` (their tokens in `passage_ids`): a later round's
        window, built from tokens the list's windows already hold."""
        return self._assemble(passage_ids, order, like.query_ids, like.calibration_ids)

    def _assemble(
        self, passage_ids: Sequence[list[int]] | dict[int, list[int]], order: Sequence[int], query_ids, calibration_ids
    ) -> ListwisePrompt:
        prefix = list(self.head_ids)
        spans = []
        for position, doc in enumerate(order):
            prefix += self.marker_ids(position)
            spans.append((len(prefix), len(prefix) + len(passage_ids[doc])))
            prefix += passage_ids[doc]
        return ListwisePrompt(
            prefix_ids=prefix,
            query_ids=list(query_ids),
            calibration_ids=list(calibration_ids),
            passage_spans=spans,
            order=list(order),
        )

    def leaders(
        self,
        windows: Sequence[ListwisePrompt],
        ranked: Sequence[Sequence[int]],
        max_length: int,
        per_window: int | None = None,
    ) -> ListwisePrompt:
        """The final window of a split list: every window's leaders (`ranked[w]`: window w's input positions, best
        first), in as many whole rounds (each window's best, then each one's second, ...) as fit `max_length`, at
        most `per_window`, placed in the windows' input order so the list's order (first-stage or not) is kept.
        The passages' tokens are taken from the windows' prompts: nothing is tokenized again."""
        ids = passage_tokens(windows)
        length = len(self.head_ids) + max(len(windows[0].query_ids), len(windows[0].calibration_ids))
        chosen: list[int] = []
        for depth in range(min(per_window or len(ids), max(map(len, ranked)))):
            round_ = [w.order[r[depth]] for w, r in zip(windows, ranked) if depth < len(r)]
            markers = range(len(chosen), len(chosen) + len(round_))
            extra = sum(len(ids[d]) for d in round_) + sum(len(self.marker_ids(p)) for p in markers)
            if chosen and length + extra > max_length:
                break
            chosen += round_
            length += extra
        kept = set(chosen)
        order = [d for w in windows for d in w.order if d in kept]
        return self._assemble(ids, order, windows[0].query_ids, windows[0].calibration_ids)

    def split(self, prompt: ListwisePrompt, max_length: int) -> list[ListwisePrompt]:
        """`prompt` as the balanced windows that fit `max_length` (itself when it fits)."""
        if len(prompt.input_ids) <= max(max_length, 0) or len(prompt.order) < 2:
            return [prompt]
        ids = passage_tokens([prompt])
        fixed = len(self.head_ids) + max(len(prompt.query_ids), len(prompt.calibration_ids))
        parts = balanced([len(self.marker_ids(len(ids) - 1)) + len(ids[d]) for d in prompt.order], max_length - fixed)
        return [
            self._assemble(ids, [prompt.order[i] for i in part], prompt.query_ids, prompt.calibration_ids)
            for part in parts
        ]

    def windows(
        self, query: str, passage_ids: Sequence[list[int]], order: Sequence[int], max_length: int
    ) -> list[list[int]]:
        """Split the input order into the fewest balanced windows that each fit `max_length` tokens."""
        fixed = self.fixed_length(query)
        marker = len(self.marker_ids(len(order) - 1))  # the longest marker bounds every other
        sizes = [marker + len(passage_ids[d]) for d in order]
        if fixed + max(sizes, default=0) > max_length:
            raise PromptError(
                f"one passage and the query need {fixed + max(sizes)} tokens but the model takes {max_length}: "
                "lower max_passage_tokens or shorten the query"
            )
        return [[order[i] for i in part] for part in balanced(sizes, max_length - fixed)]


def passage_tokens(prompts: Sequence[ListwisePrompt]) -> dict[int, list[int]]:
    """Each document's tokens as the prompts hold them (by document index): reused, never tokenized again."""
    return {d: p.prefix_ids[slice(*span)] for p in prompts for d, span in zip(p.order, p.passage_spans)}


def balanced(sizes: Sequence[int], budget: int) -> list[range]:
    """The fewest balanced runs of consecutive items whose sizes each sum to at most `budget` (an item larger
    than the budget gets a run of its own)."""
    for count in range(1, len(sizes) + 1):
        bounds = [round(i * len(sizes) / count) for i in range(count + 1)]
        if all(b - a == 1 or sum(sizes[a:b]) <= budget for a, b in zip(bounds, bounds[1:])):
            return [range(a, b) for a, b in zip(bounds, bounds[1:])]
    return []
