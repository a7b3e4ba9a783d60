"""headrank: decoding-free passage reranking from the attention of selected, preference-aligned heads."""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"
__all__ = ["HeadRanker", "HeadSet", "RankedDocument", "RankedResults", "RankerConfig"]

_HOMES = {
    "HeadRanker": "headrank.ranker",
    "HeadSet": "headrank.heads.headset",
    "RankerConfig": "headrank.ranker",
    "RankedDocument": "headrank.results",
    "RankedResults": "headrank.results",
}


def __getattr__(name: str):
    """Import torch only when a model is asked for, so `headrank --help` and the light modules stay fast."""
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'headrank' has no attribute {name!r}")
