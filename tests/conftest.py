from __future__ import annotations

import os
from pathlib import Path

import pytest

from headrank.backbone import Backbone
from headrank.testing import lexical_model, tiny_backbone, tiny_tokenizer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

DOCS = [
    "wifi and bluetooth are wireless technologies",
    "the united states entered world war one in 1917",
    "fleas live up to a year on the host",
    "goldfish grow with the size of their tank",
    "what is the range of wifi",
]
FLEA_QUERY = "how long do fleas live"


@pytest.fixture
def tiny():
    return tiny_backbone()


@pytest.fixture
def lexical():
    return Backbone(lexical_model(), tiny_tokenizer(), "lexical", "lexical")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("HEADRANK_DATA", SHARED_DATA))
    if not (path / "dl19").is_dir():
        pytest.skip(f"no evaluation data at {path}")
    return path
