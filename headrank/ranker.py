"""HeadRanker: the one object that the CLI, the service, the Ray runner and the benchmarks call."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from headrank.artifact import attach_adapter, check_base, is_artifact, ranker_parts, read_manifest
from headrank.backbone import Backbone, load_backbone, truncate_depth
from headrank.headset import HeadSet
from headrank.prompt import ORDERS, ListwisePrompt, PromptBuilder, PromptTemplate, input_order
from headrank.results import (
    Document,
    RankedResults,
    check_doc_ids,
    check_query,
    document_text,
    ranked_by_scores,
)
from headrank.scoring import ListScores, PrefixCache, ScoringConfig, encode_prefix, query_attention, score_list


@dataclass(frozen=True)
class RankerConfig:
    heads: HeadSet = field(default_factory=HeadSet.all)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    template: PromptTemplate = field(default_factory=PromptTemplate)
    order: str = "reverse"
    """input order of the passages: reverse first-stage order (ICR), forward, or random."""
    max_length: int | None = None
    """tokens per forward pass; longer lists are split into balanced windows (default: the model's limit)."""
    seed: int = 0


class HeadRanker:
    """Reranks passages from the attention of selected heads in one truncated forward pass, decoding nothing."""

    def __init__(self, backbone: Backbone, config: RankerConfig | None = None, *, truncate: bool = True):
        config = config or RankerConfig()
        if config.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {config.order!r}")
        self.backbone = backbone
        self.heads = config.heads.resolve(backbone.num_layers, backbone.num_heads)
        self.config = config
        self.depth = self.heads.depth if truncate else backbone.num_layers
        if self.depth < backbone.num_layers:
            truncate_depth(backbone.model, self.depth)
        self.builder = PromptBuilder(backbone.tokenizer, config.template)
        self.max_length = min(config.max_length or backbone.max_length, backbone.max_length)
        self.artifact: dict | None = None
        """the manifest of the trained artifact this ranker was loaded from, if any."""
        self.prefix_context: Callable[[], AbstractContextManager] | None = None
        """set by trained adapters: the context (adapters off) in which the passages are encoded. It switches
        the adapters for the whole model, so a trained ranker serves one thread at a time (the server's single
        worker and Ray's separate processes do); threads may share a ranker without an artifact."""

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = "embedded",
        heads: str | Path | HeadSet | None = "all",
        *,
        dtype: str = "auto",
        device: str = "cpu",
        truncate: bool = True,
        calibrate: bool = True,
        token_mask: bool = False,
        order: str = "reverse",
        max_passage_tokens: int | None = 256,
        max_passage_words: int | None = None,
        max_length: int | None = None,
    ) -> HeadRanker:
        """Load a backbone (hub id, folder, .gguf, "embedded") or a trained artifact folder (headrank.json)."""
        if is_artifact(model):
            return cls.from_artifact(model, dtype=dtype, device=device, truncate=truncate, max_length=max_length)
        config = RankerConfig(
            heads=HeadSet.parse(heads),
            scoring=ScoringConfig(calibrate=calibrate, token_mask=token_mask),
            template=PromptTemplate(max_passage_tokens=max_passage_tokens, max_passage_words=max_passage_words),
            order=order,
            max_length=max_length,
        )
        return cls(load_backbone(str(model), dtype=dtype, device=device), config, truncate=truncate)

    @classmethod
    def from_artifact(
        cls,
        folder: str | Path,
        *,
        dtype: str = "auto",
        device: str = "cpu",
        base_model: str | None = None,
        truncate: bool = True,
        max_length: int | None = None,
    ) -> HeadRanker:
        """Rebuild a trained ranker: its base (checked by fingerprint), cut to its depth unless `truncate=False`,
        with its adapter attached. Heads, prompt, scoring and order are the artifact's; `max_length` (tokens per
        window) is the caller's, as for any ranker."""
        folder = Path(folder).expanduser()
        manifest = read_manifest(folder)
        backbone = load_backbone(base_model or manifest["base_model"], dtype=dtype, device=device)
        check_base(folder, manifest, backbone.fingerprint)
        ranker = cls(backbone, RankerConfig(**ranker_parts(manifest), max_length=max_length), truncate=truncate)
        attach_adapter(ranker, folder, manifest)
        return ranker

    @property
    def model(self):
        return self.backbone.model

    def layer_calls(self) -> int:
        """Layers one forward pass runs (the depth after truncation)."""
        return len(self.model.model.layers)

    def prompts(
        self, query: str, documents: Sequence[Document], order: str | None = None, seed: int | None = None
    ) -> list[ListwisePrompt]:
        """The prompts of one list as inference builds them: passages in `order` (default: the ranker's),
        split into the balanced windows that fit `max_length`. Selection and training use these too."""
        query = check_query(query)
        texts = [document_text(d, i) for i, d in enumerate(documents)]
        if not texts:
            return []
        passage_ids = self.builder.encode_passages(texts)
        positions = input_order(len(texts), order or self.config.order, self.config.seed if seed is None else seed)
        return [
            self.builder.build(query, passage_ids, window)
            for window in self.builder.windows(query, passage_ids, positions, self.max_length)
        ]

    def encode(self, prompt: ListwisePrompt) -> PrefixCache:
        """The pass over a prompt's passages (under `prefix_context`): reusable by `prompt_scores` as long as
        the passages are encoded by weights that do not change (the frozen base of query-span adapters)."""
        return encode_prefix(self.model, prompt, self.prefix_context)

    def prompt_scores(self, prompt: ListwisePrompt, prefix: PrefixCache | None = None) -> ListScores:
        """Scores of one prompt by input position; differentiable when grad is enabled (training)."""
        calibrate = self.config.scoring.calibrate
        attention = query_attention(self.model, prompt, self.heads, calibrate, self.prefix_context, prefix)
        return score_list(attention, prompt, self.heads, self.config.scoring)

    def score_lists(self, query: str, documents: Sequence[Document]) -> list[tuple[list[int], ListScores]]:
        """Score each forward pass of this list: (document indices by input position, scores)."""
        return list(self.iter_lists(query, documents))

    def iter_lists(self, query: str, documents: Sequence[Document]) -> Iterator[tuple[list[int], ListScores]]:
        """`score_lists` one forward pass per step (input checked at once), so a server can interleave
        the passes of a long list with those of short ones."""
        return self._iter_prompts(self.prompts(query, documents))

    @torch.inference_mode()
    def _iter_prompts(self, prompts: list[ListwisePrompt]) -> Iterator[tuple[list[int], ListScores]]:
        for prompt in prompts:
            yield prompt.order, self.prompt_scores(prompt)

    def head_table(self, count: int, lists: Iterable[tuple[list[int], ListScores]]) -> torch.Tensor:
        """[heads, documents] in the caller's document order from the scored passes of a list of `count`."""
        table = torch.zeros(len(self.heads.heads), count)
        for window, scores in lists:
            table[:, window] = scores.per_head.float().cpu()
        return table

    @torch.inference_mode()
    def per_head_scores(self, query: str, documents: Sequence[Document]) -> torch.Tensor:
        """[heads, documents] in the caller's document order (heads in `self.heads` order)."""
        return self.head_table(len(documents), self.score_lists(query, documents))

    def combine(self, count: int, lists: Iterable[tuple[list[int], ListScores]]) -> list[float]:
        """One score per document, in the caller's order, from the scored passes of a list of `count`."""
        with torch.inference_mode():
            return (torch.tensor(self.heads.weight_vector()) @ self.head_table(count, lists)).tolist()

    def score(self, query: str, documents: Sequence[Document]) -> list[float]:
        """One score per document, in the caller's order."""
        return self.combine(len(documents), self.score_lists(query, documents))

    def rank(
        self, query: str, documents: Sequence[Document], doc_ids: Sequence[str | int] | None = None
    ) -> RankedResults:
        check_doc_ids(documents, doc_ids)
        return ranked_by_scores(query, documents, self.score(query, documents), doc_ids)

    def rank_batch(
        self,
        requests: Iterable[tuple[str, Sequence[Document]] | tuple[str, Sequence[Document], Sequence]],
        progress: bool = True,
        desc: str = "rerank",
    ) -> list[RankedResults]:
        """Rank many (query, documents[, doc_ids]) requests with a progress bar."""
        requests = list(requests)
        return [self.rank(*request) for request in tqdm(requests, desc=desc, disable=not progress, unit="query")]
