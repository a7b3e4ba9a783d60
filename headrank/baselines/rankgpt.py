"""RankGPT-style generative listwise reranking on the same backbone: the baseline that decodes a ranking.

The model reads a window of numbered passages and writes `[i] > [j] > ...`; windows of 20 slide from the
bottom of the list to the top in steps of 10, so strong passages bubble up. A window whose output is not a
full permutation of its ids is a formatting failure and keeps its input order (counted, never repaired).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from headrank.engine import defaults
from headrank.engine.backbone import Backbone, load_backbone
from headrank.engine.prompt import PromptError
from headrank.results import Document, RankedResults, check_doc_ids, check_query, document_text, ranked_by_scores

SYSTEM = "You are RankGPT, an intelligent assistant that can rank passages based on their relevancy to the query."
PREFIX = (
    "I will provide you with {num} passages, each indicated by a numerical identifier []. "
    "Rank the passages based on their relevance to the search query: {query}.\n\n"
)
SUFFIX = (
    "\nSearch Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
    "All the passages should be included and listed using identifiers, in descending order of relevance. "
    "The output format should be [] > [], e.g., [2] > [1]. Only respond with the ranking results, "
    "do not say any word or explain."
)

Generator = Callable[[str, Sequence[str]], str]
"""(query, passages of one window) -> the raw text the model writes."""

_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
_CHAIN = re.compile(r"\d+(?:\s*>\s*\d+)*")


@dataclass(frozen=True)
class RankGPTConfig:
    window: int = 20
    step: int = 10
    max_passage_tokens: int = defaults.MAX_PASSAGE_TOKENS
    """the same passage truncation as HeadRanker, so both read the same text."""
    max_new_tokens: int | None = None
    """cap on generated tokens (default: what a full answer for the window needs, plus 25%)."""

    def __post_init__(self):
        if not 0 < self.step <= self.window:
            raise ValueError(f"need 0 < step <= window, got window {self.window}, step {self.step}")


@dataclass(frozen=True)
class Permutation:
    """A parsed window answer: `order` holds 0-based input positions, best first, when `ok`."""

    order: list[int]
    ok: bool
    reason: str = ""


def parse_permutation(text: str, count: int) -> Permutation:
    """Read `[3] > [1] > [2]` (or `3 > 1 > 2`) as a ranking of `count` items; anything short of a full
    permutation (missing, repeated or out-of-range ids, no ids at all) fails and keeps the input order."""
    identity = list(range(count))
    ids = [int(m) for m in _BRACKETED.findall(text)]
    if not ids:
        chain = _CHAIN.search(text)
        ids = [int(m) for m in re.findall(r"\d+", chain.group())] if chain else []
    if not ids:
        return Permutation(identity, False, "no identifiers")
    invalid = sorted({i for i in ids if not 1 <= i <= count})
    if invalid:
        return Permutation(identity, False, f"invalid ids {invalid}")
    if len(set(ids)) != len(ids):
        return Permutation(identity, False, "repeated ids")
    if len(ids) != count:
        return Permutation(identity, False, f"missing ids {sorted(set(range(1, count + 1)) - set(ids))}")
    return Permutation([i - 1 for i in ids], True)


def sliding_windows(count: int, window: int, step: int) -> list[tuple[int, int]]:
    """[start, end) of each window, bottom of the list first, the last one ending at the top."""
    spans = []
    end = count
    while end > 0:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            break
        end -= step
    return spans


@dataclass
class FormattingStats:
    windows: int = 0
    failures: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    """the first few failed answers, cut short: what the model wrote instead of a permutation."""

    def record(self, parsed: Permutation, answer: str, keep: int = 3) -> None:
        self.windows += 1
        if not parsed.ok:
            self.failures += 1
            kind = parsed.reason.split(" [")[0]
            self.reasons[kind] = self.reasons.get(kind, 0) + 1
            if len(self.examples) < keep:
                self.examples.append(answer[:200])

    @property
    def success_rate(self) -> float:
        return 1.0 - self.failures / self.windows if self.windows else 1.0


@dataclass
class GenerationCost:
    """Where generation spends its time, summed over windows: the prefill (one pass over the prompt, up to the
    first token) against decoding (one pass per further token), which reading attention never pays."""

    windows: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def forward_passes(self) -> int:
        """The prefill produces the first token; each further token costs one more pass."""
        return self.generated_tokens


class _TokenClock:
    """A `generate` streamer that only timestamps: `put` comes once with the prompt, then once per new token."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class RankGPT:
    """Generative listwise reranker with the `rank(query, docs, doc_ids)` interface of HeadRanker."""

    def __init__(self, backbone: Backbone, config: RankGPTConfig | None = None, generator: Generator | None = None):
        self.backbone = backbone
        self.config = config or RankGPTConfig()
        self.generate = generator or self._generate
        self.stats = FormattingStats()
        self.cost = GenerationCost()

    @classmethod
    def from_pretrained(
        cls,
        model: str = "embedded",
        *,
        dtype: str = "auto",
        device: str = "cpu",
        config: RankGPTConfig | None = None,
    ) -> RankGPT:
        """Full depth with the LM head: generation needs every layer (HeadRanker truncates its own copy)."""
        return cls(load_backbone(str(model), dtype=dtype, device=device), config)

    @property
    def formatting_success_rate(self) -> float:
        return self.stats.success_rate

    def run_info(self) -> dict:
        """What `evaluate_method` writes to metrics.json about this ranker."""
        return {
            "model": self.backbone.source,
            "heads": None,
            "layers_run": self.backbone.num_layers,
            "window": self.config.window,
            "step": self.config.step,
            "windows_run": self.stats.windows,
            "formatting_success_rate": self.formatting_success_rate,
            "formatting_failures": dict(self.stats.reasons),
            "failed_answers": list(self.stats.examples),
        }

    def _truncate(self, text: str) -> str:
        tokenizer = self.backbone.tokenizer
        ids = tokenizer.encode(" ".join(text.split()), add_special_tokens=False)
        return tokenizer.decode(ids[: self.config.max_passage_tokens]).strip()

    def prompt_ids(self, query: str, passages: Sequence[str]) -> list[int]:
        num = len(passages)
        body = "".join(f"[{i}] {self._truncate(p)}\n" for i, p in enumerate(passages, 1))
        content = PREFIX.format(num=num, query=query) + body + SUFFIX.format(num=num, query=query)
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]
        tokenizer = self.backbone.tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
        else:
            text = f"{SYSTEM}\n\n{content}\n\n"
        return tokenizer.encode(text, add_special_tokens=False)

    def answer_budget(self, count: int) -> int:
        if self.config.max_new_tokens is not None:
            return self.config.max_new_tokens
        full = " > ".join(f"[{i}]" for i in range(count, 0, -1))
        return int(1.25 * len(self.backbone.tokenizer.encode(full, add_special_tokens=False))) + 4

    @torch.inference_mode()
    def _generate(self, query: str, passages: Sequence[str]) -> str:
        """Greedy decoding of one window's ranking."""
        model, tokenizer = self.backbone.model, self.backbone.tokenizer
        ids = self.prompt_ids(query, passages)
        budget = self.answer_budget(len(passages))
        if len(ids) + budget > self.backbone.max_length:
            raise PromptError(
                f"a window of {len(passages)} passages needs {len(ids) + budget} tokens but the model takes "
                f"{self.backbone.max_length}: lower the window or max_passage_tokens"
            )
        device = model.get_input_embeddings().weight.device
        input_ids = torch.tensor([ids], device=device)
        eos = tokenizer.eos_token_id
        clock = _TokenClock()
        start = time.perf_counter()
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=budget,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
            streamer=clock,
        )
        end = time.perf_counter()
        first = clock.times[1] if len(clock.times) > 1 else end
        self.cost.windows += 1
        self.cost.prompt_tokens += len(ids)
        self.cost.generated_tokens += out.shape[1] - len(ids)
        self.cost.prefill_seconds += first - start
        self.cost.decode_seconds += end - first
        return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)

    def rerank_order(self, query: str, texts: Sequence[str]) -> list[int]:
        """Indices into `texts`, best first, after the sliding windows."""
        order = list(range(len(texts)))
        for start, end in sliding_windows(len(texts), self.config.window, self.config.step):
            current = order[start:end]
            answer = self.generate(query, [texts[i] for i in current])
            parsed = parse_permutation(answer, len(current))
            self.stats.record(parsed, answer)
            order[start:end] = [current[p] for p in parsed.order]
        return order

    def rank(
        self, query: str, documents: Sequence[Document], doc_ids: Sequence[str | int] | None = None
    ) -> RankedResults:
        ids = check_doc_ids(documents, doc_ids)
        query = check_query(query)
        texts = [document_text(d, i) for i, d in enumerate(documents)]
        order = self.rerank_order(query, texts) if texts else []
        scores = [0.0] * len(order)
        for rank, i in enumerate(order):  # the permutation as scores n, n-1, ...: no ties, so the order is kept
            scores[i] = float(len(order) - rank)
        return ranked_by_scores(query, documents, scores, ids)
