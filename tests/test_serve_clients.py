"""The clients people already use, pointed at `headrank serve` over a real socket on 127.0.0.1 that wants an API
key: Cohere's SDK (the legacy v1 client and the default ClientV2), LangChain's CohereRerank, the rerankers
library's API ranker (cohere, jina and text-embeddings-inference providers), each with the key and with a wrong
one (a 401, and the key in no log line), and schemathesis with all checks over the schema, the key supplied."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")  # the `serve` extra
pytest.importorskip("uvicorn")

import json  # noqa: E402

from headrank.engine.testing import tiny_backbone  # noqa: E402
from headrank.ranker import HeadRanker, RankerConfig  # noqa: E402
from headrank.results import relevance_scores  # noqa: E402
from headrank.serve.app import ServeConfig, create_app  # noqa: E402

from .conftest import DOCS, FLEA_QUERY, log_records, served  # noqa: E402


@pytest.fixture(scope="module")
def server():
    ranker = HeadRanker(tiny_backbone(), RankerConfig())
    config = ServeConfig(model_name="tiny", max_documents=8, max_body_bytes=20_000, api_keys=(KEY,))
    with served(create_app(ranker, config)) as c:
        yield str(c.base_url).rstrip("/"), ranker


KEY = "hr-client-key-93b7"
WRONG = "hr-client-key-0000"


@pytest.fixture
def refusals():
    """The request log lines written meanwhile (which must hold the 401s and never a key)."""
    with log_records("headrank") as records:
        yield records
    lines = [r.getMessage() for r in records]
    assert not any(KEY in line or WRONG in line for line in lines)


def _refused(records) -> list[int]:
    return [json.loads(r.getMessage())["status"] for r in records if r.name == "headrank.requests"]


def _expected(ranker: HeadRanker, top_n: int = len(DOCS)) -> tuple[list[int], list[float]]:
    relevance = relevance_scores(ranker.score(FLEA_QUERY, DOCS))
    order = sorted(range(len(DOCS)), key=lambda i: -relevance[i])[:top_n]
    return order, [relevance[i] for i in order]


@pytest.mark.parametrize("client_class", ["Client", "ClientV2"])
def test_cohere_sdk_clients(server, client_class, refusals):
    cohere = pytest.importorskip("cohere")
    url, ranker = server
    client = getattr(cohere, client_class)(api_key=KEY, base_url=url)
    answer = client.rerank(model="tiny", query=FLEA_QUERY, documents=DOCS, top_n=3)
    order, relevance = _expected(ranker, 3)
    assert [r.index for r in answer.results] == order
    assert [r.relevance_score for r in answer.results] == pytest.approx(relevance)
    with pytest.raises(cohere.errors.UnauthorizedError) as refused:
        getattr(cohere, client_class)(api_key=WRONG, base_url=url).rerank(
            model="tiny", query=FLEA_QUERY, documents=DOCS
        )
    assert refused.value.status_code == 401 and refused.value.body == {"detail": "the API key is not valid"}
    assert _refused(refusals) == [200, 401]


def test_langchain_cohere_rerank(server, refusals):
    pytest.importorskip("langchain_cohere")
    from cohere.errors import UnauthorizedError
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    url, ranker = server
    documents = [Document(page_content=d) for d in DOCS]
    reranker = CohereRerank(cohere_api_key=KEY, base_url=url, model="tiny", top_n=2)
    kept = reranker.compress_documents(documents, FLEA_QUERY)
    order, relevance = _expected(ranker, 2)
    assert [d.page_content for d in kept] == [DOCS[i] for i in order]
    assert [d.metadata["relevance_score"] for d in kept] == pytest.approx(relevance)
    with pytest.raises(UnauthorizedError, match="the API key is not valid"):
        CohereRerank(cohere_api_key=WRONG, base_url=url, model="tiny").compress_documents(documents, FLEA_QUERY)
    assert _refused(refusals) == [200, 401]


def test_llamaindex_cohere_rerank(server, refusals):
    pytest.importorskip("llama_index.postprocessor.cohere_rerank")
    from cohere.errors import UnauthorizedError
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    url, ranker = server
    nodes = [NodeWithScore(node=TextNode(text=d)) for d in DOCS]
    kept = CohereRerank(api_key=KEY, base_url=url, model="tiny", top_n=2).postprocess_nodes(nodes, query_str=FLEA_QUERY)
    order, relevance = _expected(ranker, 2)
    assert [n.node.get_content() for n in kept] == [DOCS[i] for i in order]
    assert [n.score for n in kept] == pytest.approx(relevance)
    wrong = CohereRerank(api_key=WRONG, base_url=url, model="tiny", max_retries=0)
    with pytest.raises(UnauthorizedError, match="the API key is not valid"):
        wrong.postprocess_nodes(nodes, query_str=FLEA_QUERY)
    assert _refused(refusals) == [200, 401]


def test_haystack_cohere_ranker(server, refusals, monkeypatch):
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    pytest.importorskip("haystack_integrations.components.rankers.cohere")
    from cohere.errors import UnauthorizedError
    from haystack import Document
    from haystack.utils import Secret
    from haystack_integrations.components.rankers.cohere import CohereRanker

    url, ranker = server
    documents = [Document(content=d) for d in DOCS]
    kept = CohereRanker(model="tiny", top_k=2, api_key=Secret.from_token(KEY), api_base_url=url).run(
        query=FLEA_QUERY, documents=documents
    )["documents"]
    order, relevance = _expected(ranker, 2)
    assert [d.content for d in kept] == [DOCS[i] for i in order]
    assert [d.score for d in kept] == pytest.approx(relevance)
    wrong = CohereRanker(model="tiny", api_key=Secret.from_token(WRONG), api_base_url=url)
    with pytest.raises(UnauthorizedError, match="the API key is not valid"):
        wrong.run(query=FLEA_QUERY, documents=documents)
    assert _refused(refusals) == [200, 401]


@pytest.mark.parametrize(
    ("provider", "path"), [("cohere", "/v1/rerank"), ("jina", "/v1/rerank"), ("text-embeddings-inference", "/rerank")]
)
def test_rerankers_api_ranker(server, provider, path, refusals):
    pytest.importorskip("rerankers")
    from rerankers.models.api_rankers import APIRanker

    url, ranker = server
    results = APIRanker(model="tiny", api_key=KEY, api_provider=provider, url=url + path).rank(FLEA_QUERY, DOCS)
    order, relevance = _expected(ranker)
    assert [r.document.text for r in results.results] == [DOCS[i] for i in order]
    assert [r.score for r in results.results] == pytest.approx(relevance)
    with pytest.raises((KeyError, TypeError)):  # it reads the 401 body {"detail"} as results, and fails on it
        APIRanker(model="tiny", api_key=WRONG, api_provider=provider, url=url + path).rank(FLEA_QUERY, DOCS)
    assert _refused(refusals) == [200, 401]


def test_schemathesis_all_checks_pass(server, tmp_path):
    """The published schema is the contract: generated requests (bounded in number and time) get only the
    statuses and bodies the schema declares, and what violates the schema is refused."""
    pytest.importorskip("schemathesis")
    url, _ = server
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    run = subprocess.run(
        [
            cli,
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "25",
            "--generation-deterministic",
            "--request-timeout",
            "30",
            "--header",
            f"Authorization: Bearer {KEY}",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "No issues found" in run.stdout or "passed" in run.stdout
