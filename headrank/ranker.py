"""HeadRanker: the one object that the CLI, the service, the Ray runner and the benchmarks call."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from headrank.artifact import NO_ADAPTER, adapter_mode, check_base, is_artifact, ranker_parts, read_manifest
from headrank.calibration import Calibration, ListEvidence, load_calibration
from headrank.engine import defaults
from headrank.engine.adapters import Adapter, load_adapter
from headrank.engine.backbone import Backbone, load_backbone
from headrank.engine.batching import default_batch_tokens, token_batches
from headrank.engine.family import ModelFamily
from headrank.engine.prompt import ORDERS, ListwisePrompt, PromptBuilder, PromptTemplate, input_order
from headrank.engine.scoring import (
    ListScores,
    PrefixBatch,
    ScoringConfig,
    SuffixLayout,
    encode_prefixes,
    head_plans,
    passage_scores,
    query_attention,
)
from headrank.heads.headset import HeadSet
from headrank.highlights import prompt_highlights
from headrank.results import (
    Document,
    Highlight,
    RankedResults,
    ScoredList,
    check_doc_ids,
    check_query,
    document_text,
    ranked_by_scores,
)
from headrank.rounds import ListRun, MergePlan, Passes, combined, head_table


@dataclass(frozen=True)
class RankerConfig:
    heads: HeadSet = field(default_factory=HeadSet.all)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    template: PromptTemplate = field(default_factory=PromptTemplate)
    order: str = defaults.ORDER
    """input order of the passages: reverse first-stage order (ICR), forward, or random."""
    max_length: int | None = None
    """tokens per forward pass; longer lists are split into balanced windows (default: the model's limit)."""
    merge: str = defaults.MERGE
    """how a list split into windows is ranked (headrank/rounds.py): "sliding" (RankGPT's sliding windows from
    the bottom up, each one pass), "tournament" (each window's leaders go on to a final window, whose ranking is
    put above the rest) or "scaled" (each window's scores as they are, the first merge)."""
    leaders: int | None = None
    """leaders per window in a tournament's final window (default: as many whole rounds as fit `max_length`)."""
    slide_size: int = defaults.SLIDE_SIZE
    """passages of a sliding window (fewer where they do not fit `max_length`)."""
    slide_step: int = defaults.SLIDE_STEP
    """passages a sliding window moves up by: below `slide_size`, so that windows overlap."""
    seed: int = 0
    max_batch_tokens: int | None = None
    """padded tokens per forward pass when many prompts are scored (default: chosen for the device, see
    `batching.default_batch_tokens`); a prompt longer than the budget runs alone, so 1 is one prompt per pass."""


RUNNING = ("max_length", "max_batch_tokens", "merge", "leaders", "slide_size", "slide_step")
"""RankerConfig's fields that say how lists run, not what scores them: a trained artifact leaves them to the caller."""


class HeadRanker:
    """Reranks passages from the attention of selected heads in one truncated forward pass, decoding nothing.

    The only door to the model: selection, training, curves, the benchmarks and the server ask it for scores
    (of prompts, over reusable prefixes, batched under a token budget) and never reach into the model."""

    def __init__(self, backbone: Backbone, config: RankerConfig | None = None, *, truncate: bool = True):
        config = config or RankerConfig()
        if config.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, not {config.order!r}")
        if config.merge not in defaults.MERGES:
            raise ValueError(f"merge must be one of {defaults.MERGES}, not {config.merge!r}")
        if config.leaders is not None and config.leaders < 1:
            raise ValueError(f"leaders must be at least 1, got {config.leaders}")
        if config.slide_size < 2:
            raise ValueError(f"slide_size must be at least 2 passages, got {config.slide_size}")
        if not 1 <= config.slide_step < config.slide_size:
            raise ValueError(
                f"slide_step must be from 1 to slide_size - 1 = {config.slide_size - 1} (sliding windows must overlap "
                f"for a passage to move up), got {config.slide_step}"
            )
        if config.max_batch_tokens is not None and config.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be at least 1, got {config.max_batch_tokens}")
        self.backbone = backbone
        self.family = ModelFamily(backbone.model)
        self.heads = config.heads.resolve(backbone.num_layers, backbone.num_heads)
        self.config = config
        self.depth = self.heads.depth if truncate else backbone.num_layers
        if self.depth < self.family.num_layers:
            self.family.truncate(self.depth)
        self.builder = PromptBuilder(backbone.tokenizer, config.template)
        self.max_length = min(config.max_length or backbone.max_length, backbone.max_length)
        self.max_batch_tokens = config.max_batch_tokens or default_batch_tokens(str(self.family.device))
        self.artifact: dict | None = None
        """the manifest of the trained artifact this ranker was loaded from, if any."""
        self.calibration: Calibration | None = None
        """P(relevant) from the list's evidence (calibration.py): the artifact's calibration.json, if any."""
        self.prefix_context: Callable[[], AbstractContextManager] | None = None
        """set by `adapt` for query-span adapters: the context (adapters off) in which the passages are encoded.
        It switches the adapters for the whole model, so a trained ranker serves one thread at a time (the
        server's single worker and Ray's separate processes do); threads may share a ranker without one."""
        self._plans: dict = {}

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path = defaults.MODEL,
        heads: str | Path | HeadSet | None = "all",
        *,
        dtype: str = defaults.DTYPE,
        device: str = defaults.DEVICE,
        truncate: bool = True,
        calibrate: bool = True,
        token_mask: bool = False,
        order: str = defaults.ORDER,
        max_passage_tokens: int | None = defaults.MAX_PASSAGE_TOKENS,
        max_passage_words: int | None = None,
        max_length: int | None = None,
        max_batch_tokens: int | None = None,
        merge: str = defaults.MERGE,
        slide_size: int = defaults.SLIDE_SIZE,
        slide_step: int = defaults.SLIDE_STEP,
    ) -> HeadRanker:
        """Load a backbone (hub id, folder, .gguf, "embedded") or a trained artifact folder (headrank.json); only
        the layers up to the deepest head are loaded when `truncate`."""
        running = {"max_length": max_length, "max_batch_tokens": max_batch_tokens, "merge": merge}
        running |= {"slide_size": slide_size, "slide_step": slide_step}
        if is_artifact(model):
            fixed = {"heads": heads not in (None, "all"), "calibrate": not calibrate, "token_mask": token_mask}
            fixed |= {
                "order": order != defaults.ORDER,
                "max_passage_tokens": max_passage_tokens != defaults.MAX_PASSAGE_TOKENS,
            }
            fixed |= {"max_passage_words": max_passage_words is not None}
            if any(fixed.values()):
                names = ", ".join(name for name, changed in fixed.items() if changed)
                raise ValueError(
                    f"{model} is a trained artifact: it fixes the heads, prompt and scoring it was trained with, so "
                    f"{names} cannot be set here (an ablation: HeadRanker.from_artifact(...).variant(...))"
                )
            return cls.from_artifact(model, dtype=dtype, device=device, truncate=truncate, **running)
        config = RankerConfig(
            heads=HeadSet.parse(heads),
            scoring=ScoringConfig(calibrate=calibrate, token_mask=token_mask),
            template=PromptTemplate(max_passage_tokens=max_passage_tokens, max_passage_words=max_passage_words),
            order=order,
            **running,
        )
        depth = config.heads.depth if truncate and config.heads.heads else None
        backbone = load_backbone(str(model), dtype=dtype, device=device, depth=depth)
        return cls(backbone, config, truncate=truncate)

    @classmethod
    def from_artifact(
        cls,
        folder: str | Path,
        *,
        dtype: str = defaults.DTYPE,
        device: str = defaults.DEVICE,
        base_model: str | None = None,
        truncate: bool = True,
        **running,
    ) -> HeadRanker:
        """Rebuild a trained ranker: its base (checked by fingerprint), cut to its depth unless `truncate=False`,
        with its adapter attached. Heads, prompt, scoring and order are the artifact's; how lists run is the
        caller's, as for any ranker: `running` sets RankerConfig's RUNNING fields (max_length, tokens per window;
        max_batch_tokens; merge, leaders, slide_size, slide_step: how a split list is ranked)."""
        unknown = sorted(set(running) - set(RUNNING))
        if unknown:
            raise TypeError(f"from_artifact() got settings an artifact fixes or that do not exist: {unknown}")
        folder = Path(folder).expanduser()
        manifest = read_manifest(folder)
        depth = manifest["depth"] if truncate else None
        backbone = load_backbone(base_model or manifest["base_model"], dtype=dtype, device=device, depth=depth)
        check_base(folder, manifest, backbone.fingerprint)
        config = RankerConfig(
            **ranker_parts(manifest),
            **running,
        )
        ranker = cls(backbone, config, truncate=truncate)
        ranker.artifact, ranker.calibration = manifest, load_calibration(folder)
        mode = adapter_mode(folder, manifest, ranker.heads.depth)
        if mode != NO_ADAPTER:
            adapter = load_adapter(ranker.model, folder)
            if mode == "all":
                ranker.merged(adapter)
            else:
                ranker.adapt(adapter, query_only=True)
        return ranker

    @property
    def model(self):
        return self.backbone.model

    def recipe(self) -> dict:
        """What rebuilds this ranker on its base model: the manifest fields of an artifact saved from it."""
        return {
            "base_model": self.backbone.source,
            "base_fingerprint": self.backbone.fingerprint,
            "heads": HeadSet.to_dict(self.heads)["heads"],
            "depth": self.depth,
            "template": asdict(self.config.template),
            "scoring": asdict(self.config.scoring),
            "order": self.config.order,
        }

    def cut_to_tokens(self, texts: Sequence[str], limit: int) -> list[tuple[str, int]]:
        """Each text held to its first `limit` tokens of the model's tokenizer, with its length uncut (the server's
        query cap, Cohere's `max_tokens_per_doc`)."""
        return self.builder.cut(texts, limit)

    def overlong_passages(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """(index, tokens uncut) of each text the passage limits (`passage_limit`) would cut."""
        return self.builder.overlong(texts)

    @property
    def passage_limit(self) -> str:
        return self.config.template.passage_limit

    def device_memory(self) -> dict:
        """Device memory in use and at its peak (MiB), on a CUDA device; empty elsewhere."""
        device = self.family.device
        if device.type != "cuda":
            return {}
        return {
            "device_memory_mb": round(torch.cuda.memory_allocated(device) / 2**20, 1),
            "peak_device_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
        }

    def layer_calls(self) -> int:
        """Layers one forward pass runs (the depth after truncation)."""
        return self.family.num_layers

    def adapt(self, adapter: Adapter, query_only: bool) -> None:
        """Run with a LoRA adapter injected into this ranker's model: on the query span only (the passages are
        then encoded with the adapter off, by the frozen base) or on every token."""
        self.prefix_context = adapter.off if query_only else None

    def variant(self, **changes) -> HeadRanker:
        """The same model, adapter and artifact with other settings (e.g. `max_length`, `max_batch_tokens`)."""
        other = HeadRanker(
            self.backbone, replace(self.config, **changes), truncate=self.depth < self.backbone.num_layers
        )
        other.artifact, other.prefix_context = self.artifact, self.prefix_context
        other.calibration = self.calibration
        return other

    def merged(self, adapter: Adapter) -> None:
        """Fold an every-token adapter into the weights: free at inference."""
        self.backbone.model = adapter.merged()
        self.family = ModelFamily(self.backbone.model)
        self.prefix_context = None

    # -- prompts --------------------------------------------------------------------------------------------
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

    def batches(self, prompts: Sequence[ListwisePrompt]) -> list[list[int]]:
        """Indices of `prompts` grouped into forward passes under the ranker's token budget, longest first."""
        return token_batches([len(p.input_ids) for p in prompts], self.max_batch_tokens)

    # -- scoring --------------------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[ListwisePrompt]) -> PrefixBatch:
        """The pass over the prompts' passages (under `prefix_context`): reusable by `score_prompts` as long as
        the passages are encoded by weights that do not change (the frozen base of query-span adapters)."""
        return encode_prefixes(self.family, prompts, self.prefix_context)

    def _head_plans(self) -> tuple[dict, torch.Tensor]:
        """The capture's index tensors and the head weights on the model's device, built once (never inside a
        pass: each would be a host synchronisation)."""
        device = self.family.device
        if device not in self._plans:
            groups = self.family.num_heads // self.family.num_kv_heads
            weights = torch.tensor(self.heads.weight_vector(), dtype=torch.float32, device=device)
            self._plans[device] = (head_plans(self.heads, groups, device), weights)
        return self._plans[device]

    def _attention(
        self, prompts: Sequence[ListwisePrompt], prefix: PrefixBatch | None, exit_early: bool = True
    ) -> tuple[torch.Tensor, SuffixLayout]:
        calibrate = self.config.scoring.calibrate
        if prefix is None:
            prefix = encode_prefixes(self.family, prompts, self.prefix_context, exit_early)
        layout = SuffixLayout.build(prompts, calibrate, prefix.kv[0][0].shape[2]).to(self.family.device)
        plans = self._head_plans()[0]
        return query_attention(self.family, self.heads, plans, calibrate, prefix, layout, exit_early), layout

    def token_attention(self, prompts: Sequence[ListwisePrompt], exit_early: bool = True) -> torch.Tensor:
        """[prompts, 1 or 2 (query, N/A span), heads, longest prefix]: the mean attention of each span to each
        prefix token, what the scores are reduced from. `exit_early=False` runs the last layer to its end (the
        same rows, for timings and tests)."""
        return self._attention(prompts, None, exit_early)[0]

    @torch.inference_mode()
    def evidence_spans(
        self, query: str, documents: Sequence[Document], top: int | None = None
    ) -> list[list[Highlight]]:
        """Per document, in the caller's order, its sentences by the selected heads' attention (heaviest first):
        one more pass over the list's prompts (the query's attention to every token, not only each passage's sum,
        headrank/highlights.py)."""
        texts = [document_text(d, i) for i, d in enumerate(documents)]
        prompts = self.prompts(query, documents)
        weights = torch.tensor(self.heads.weight_vector())
        max_words = self.config.template.max_passage_words
        out: list[list[Highlight]] = [[] for _ in texts]
        for group in self.batches(prompts):
            attention = self.token_attention([prompts[i] for i in group])
            for row, i in enumerate(group):
                spans = prompt_highlights(
                    attention[row], prompts[i], weights, texts, self.builder.tokenizer, max_words, top
                )
                for doc, found in spans.items():
                    out[doc] = found
        return out

    def score_prompts(self, prompts: Sequence[ListwisePrompt], prefix: PrefixBatch | None = None) -> list[ListScores]:
        """Scores of prompts in one batched pass (the prefix pass too unless `prefix` is given), by input position,
        on the device; differentiable when grad is enabled (training)."""
        attention, layout = self._attention(prompts, prefix)
        weights = self._head_plans()[1]
        per_head, raw = passage_scores(attention, layout, weights, self.config.scoring)
        scores = torch.einsum("h,bhp->bp", weights, per_head)
        return [
            ListScores(per_head[i, :, :n], scores[i, :n], raw[i, :, :n])
            for i, n in enumerate(len(p.passage_spans) for p in prompts)
        ]

    def prompt_scores(self, prompt: ListwisePrompt, prefix: PrefixBatch | None = None) -> ListScores:
        """`score_prompts` of one prompt."""
        return self.score_prompts([prompt], prefix)[0]

    @torch.no_grad()  # not inference_mode: stored prefixes computed here are reused with grad in training
    def score_many(
        self,
        prompts: Sequence[ListwisePrompt],
        prefix_for: Callable[[ListwisePrompt], PrefixBatch] | None = None,
    ) -> list[ListScores]:
        """Scores of any number of prompts, batched under the token budget, on the host in input order (one
        transfer per batch). `prefix_for` gives stored prefix passes (training) instead of computing them."""
        results: list[ListScores | None] = [None] * len(prompts)
        for group in self.batches(prompts):
            chosen = [prompts[i] for i in group]
            prefix = PrefixBatch.stack([prefix_for(p) for p in chosen]) if prefix_for else None
            for i, scores in zip(group, self._to_host(self.score_prompts(chosen, prefix))):
                results[i] = scores
        return results

    @staticmethod
    def _to_host(scored: list[ListScores]) -> list[ListScores]:
        """Every score of a batch to the host in one copy (float32), split back per prompt."""
        flat = torch.cat([t.reshape(-1).float() for s in scored for t in (s.per_head, s.scores, s.raw)]).cpu()
        out, at = [], 0
        for s in scored:
            parts = []
            for t in (s.per_head, s.scores, s.raw):
                parts.append(flat[at : at + t.numel()].view(t.shape))
                at += t.numel()
            out.append(ListScores(*parts))
        return out

    def prompt_tokens(self, prompt: ListwisePrompt) -> int:
        """Tokens one prompt costs: its passages and query span, and the N/A span when calibrating."""
        return self.merge_plan().prompt_tokens(prompt)

    def score_lists(self, query: str, documents: Sequence[Document]) -> Passes:
        """Score each window of this list alone (the first round): (document indices by input position, scores)."""
        prompts = self.prompts(query, documents)
        return [(p.order, s) for p, s in zip(prompts, self.score_many(prompts))]

    def head_table(self, count: int, lists: Iterable[tuple[list[int], ListScores]]) -> torch.Tensor:
        """[heads, documents] in the caller's document order from the scored passes of a list of `count`."""
        return head_table(len(self.heads.heads), count, lists)

    @torch.inference_mode()
    def per_head_scores(self, query: str, documents: Sequence[Document]) -> torch.Tensor:
        """[heads, documents] in the caller's document order (heads in `self.heads` order), each window's alone."""
        return self.head_table(len(documents), self.score_lists(query, documents))

    def combine(self, count: int, lists: Passes, *rounds: Passes) -> list[float]:
        """One score per document, in the caller's order, from the scored windows of a list of `count` and a
        tournament's later rounds (`rounds.combined`)."""
        return combined(self.heads.weight_vector(), count, lists, *rounds)

    def merge_plan(self) -> MergePlan:
        """What a list's rounds read from this ranker (headrank/rounds.py)."""
        config = self.config
        merging = {name: getattr(config, name) for name in ("merge", "leaders", "slide_size", "slide_step")}
        weights = tuple(self.heads.weight_vector())
        return MergePlan(
            self.builder,
            self.max_length,
            weights,
            config.scoring.calibrate,
            **merging,
            order=config.order,
            seed=config.seed,
        )

    def run_list(self, query: str, documents: Sequence[Document]) -> ListRun:
        """One list's chain of rounds, its first prompts ready to score: its one window, or the first round of
        the merge when it is split (the server's scheduler and `score_requests` drive it)."""
        return ListRun.begin(self.merge_plan(), len(documents), self.prompts(query, documents))

    def finish(self, run: ListRun) -> ScoredList:
        """A finished run's scores, its cost, and when the ranker has a calibration each document's P(relevant)
        (read from the passes the top of the list carries: the calibration was fitted on lists of one window)."""
        scores = run.scores()
        scored = ScoredList(scores)
        if self.calibration is not None and scores:
            evidence = ListEvidence.from_passes(scores, run.evidence(), self.heads.weight_vector())
            scored = ScoredList(scores, self.calibration.relevance(evidence))
        return scored.costing(run.windows, run.passes, run.tokens)

    def score(self, query: str, documents: Sequence[Document]) -> list[float]:
        """One score per document, in the caller's order."""
        return self.score_batch([(query, documents)])[0]

    def score_batch(self, requests: Sequence[tuple[str, Sequence[Document]]]) -> list[list[float]]:
        """One score per document of each (query, documents), the prompts of every request batched together."""
        return [r.scores for r in self.score_requests(requests)]

    def score_requests(
        self, requests: Sequence[tuple[str, Sequence[Document]]], memo: dict | None = None
    ) -> list[ScoredList]:
        """`score_batch` with each list's calibrated relevance (when the ranker has a calibration) and cost: the
        first prompts of every list are scored together, then the next round of every list not done, and so on.
        `memo` (prompt tokens -> scores) keeps every prompt's scores and scores none it holds again: a benchmark
        that compares merges shares the windows they have in common (the cost still counts them)."""
        memo = {} if memo is None else memo
        runs = [self.run_list(query, documents) for query, documents in requests]
        while active := [run for run in runs if run.prompts]:
            todo = {tuple(p.input_ids): p for run in active for p in run.prompts if tuple(p.input_ids) not in memo}
            memo.update(zip(todo, self.score_many(list(todo.values()))))
            for run in active:
                run.advance([memo[tuple(p.input_ids)] for p in run.prompts])
        return [self.finish(run) for run in runs]

    def rank(
        self,
        query: str,
        documents: Sequence[Document],
        doc_ids: Sequence[str | int] | None = None,
        highlights: bool = False,
    ) -> RankedResults:
        """Best first; `highlights` adds each document's evidence spans (one more pass, headrank/highlights.py)."""
        ranked = self.rank_batch([(query, documents, doc_ids)], progress=False)[0]
        if highlights:
            spans = self.evidence_spans(query, documents)
            ranked.results = [replace(r, highlights=tuple(spans[r.index])) for r in ranked.results]
        return ranked

    def rank_batch(
        self,
        requests: Iterable[tuple[str, Sequence[Document]] | tuple[str, Sequence[Document], Sequence]],
        progress: bool = True,
        desc: str = "rerank",
        chunk: int = 64,
    ) -> list[RankedResults]:
        """Rank many (query, documents[, doc_ids]) requests, their prompts batched across queries under the
        token budget (`chunk` queries at a time, for the progress bar and bounded memory)."""
        requests = [tuple(r) for r in requests]
        for r in requests:
            check_doc_ids(r[1], r[2] if len(r) > 2 else None)
        results: list[RankedResults] = []
        with tqdm(total=len(requests), desc=desc, disable=not progress, unit="query") as bar:
            for start in range(0, len(requests), chunk):
                part = requests[start : start + chunk]
                for r, scored in zip(part, self.score_requests([(r[0], r[1]) for r in part])):
                    doc_ids = r[2] if len(r) > 2 else None
                    ranked = ranked_by_scores(r[0], r[1], scored.scores, doc_ids, scored.relevance)
                    ranked.windows, ranked.prompts, ranked.tokens = scored.windows, scored.prompts, scored.tokens
                    results.append(ranked)
                bar.update(len(part))
        return results
