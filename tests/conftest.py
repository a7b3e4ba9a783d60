from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrank.engine.backbone import Backbone
from headrank.engine.testing import DOCS, FLEA_QUERY, lexical_model, tiny_backbone, tiny_tokenizer  # noqa: F401 (the tests take DOCS and FLEA_QUERY from here)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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


@contextlib.contextmanager
def log_records(name: str) -> Iterator[list]:
    """The records a logger (and its children) writes meanwhile, at INFO: appended as they come."""
    import logging

    records, handler, logger = [], logging.Handler(), logging.getLogger(name)
    handler.emit = records.append
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def served(app) -> Iterator[httpx.Client]:  # noqa: F821 (imported lazily)
    """Run the app with uvicorn on a free port of 127.0.0.1 in a thread; a client for it (the `serve` extra)."""
    import httpx
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=120) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
