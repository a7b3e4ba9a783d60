"""headrank: decoding-free passage reranking from the attention of selected, preference-aligned heads."""

from __future__ import annotations

from headrank.headset import HeadSet
from headrank.ranker import HeadRanker, RankerConfig
from headrank.results import RankedDocument, RankedResults

__all__ = ["HeadRanker", "HeadSet", "RankedDocument", "RankedResults", "RankerConfig"]
__version__ = "0.1.0"
