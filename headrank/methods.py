"""The rerankers an evaluation can name, and how each is loaded: the registry behind `headrank eval --method`.
Importing this module loads no model and no torch; `load_method` does."""

from __future__ import annotations

from pathlib import Path

METHODS = {
    "headrank": "the trained HeadRank (--artifact, default: the committed one)",
    "bm25": "the first stage's order",
    "icr": "all heads of all layers, calibrated (ICR)",
    "qrhead": "a head subset chosen by nDCG (--heads)",
    "selected": "a head subset chosen by HeadRank's selection, untrained (--heads)",
    "rankgpt": "generative listwise reranking with the same model (sliding window 20/10)",
    "dense": "a sentence-transformers bi-encoder (--dense-model, default: the embedded MiniLM)",
}


def load_method(
    method: str,
    *,
    model: str = "embedded",
    heads: str | None = "all",
    artifact: str | Path | None = None,
    dense_model: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    truncate: bool = True,
    **ranker_options,
):
    """The reranker `method` names (None for bm25, which keeps the first stage); `ranker_options` go to
    HeadRanker.from_pretrained (calibrate, order, max_passage_tokens, ...)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: known are {', '.join(METHODS)}")
    if method == "bm25":
        return None
    if method == "dense":
        from headrank.baselines.dense import EMBEDDED, DenseReranker

        return DenseReranker.from_pretrained(dense_model or EMBEDDED, device=device)
    if method == "rankgpt":
        from headrank.baselines.rankgpt import RankGPT, RankGPTConfig

        config = RankGPTConfig(max_passage_tokens=ranker_options.get("max_passage_tokens", 256))
        return RankGPT.from_pretrained(model, dtype=dtype, device=device, config=config)
    from headrank.ranker import HeadRanker

    if method == "headrank":
        from headrank.artifact import DEFAULT_ARTIFACT

        return HeadRanker.from_artifact(
            artifact or DEFAULT_ARTIFACT,
            dtype=dtype,
            device=device,
            truncate=truncate,
            max_length=ranker_options.get("max_length"),
            max_batch_tokens=ranker_options.get("max_batch_tokens"),
        )
    if method == "icr":
        heads = "all"
    elif heads in (None, "all"):
        raise ValueError(f"--method {method} needs --heads (a head-set file from `headrank select-heads`)")
    return HeadRanker.from_pretrained(model, heads, dtype=dtype, device=device, truncate=truncate, **ranker_options)
