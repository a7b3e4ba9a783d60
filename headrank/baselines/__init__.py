"""Baselines on the same data and model as HeadRanker: BM25 first-stage retrieval and RankGPT-style generation."""
