"""headrank: decoding-free passage reranking from the attention of selected, preference-aligned heads."""

from __future__ import annotations

from headrank.headset import HeadSet
from headrank.ranker import HeadRanker, RankedDocument, RankedResults, RankerConfig

__all__ = ["HeadRanker", "HeadSet", "RankedDocument", "RankedResults", "RankerConfig"]
__version__ = "0.1.0"
