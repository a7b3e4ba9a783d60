"""The HTTP service over a real socket (uvicorn on 127.0.0.1) with the tiny model: shapes, bad input, queueing."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")  # the `serve` extra: without it these tests skip, they do not error
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from headrank.cli import main  # noqa: E402
from headrank.engine.testing import save_tiny, tiny_backbone  # noqa: E402
from headrank.ranker import HeadRanker, RankerConfig  # noqa: E402
from headrank.results import relevance_scores  # noqa: E402
from headrank.serve.app import ServeConfig, create_app  # noqa: E402
from headrank.serve.scheduler import QueueFull, Scheduler  # noqa: E402

from .conftest import DOCS, FLEA_QUERY, served  # noqa: E402

# 150 tokens per pass: five of the test documents need two forward passes, fifteen need five
MAX_LENGTH = 150


@pytest.fixture(scope="module")
def ranker() -> HeadRanker:
    return HeadRanker(tiny_backbone(), RankerConfig(max_length=MAX_LENGTH))


@pytest.fixture(scope="module")
def client(ranker):
    config = ServeConfig(model_name="tiny", max_documents=8, max_body_bytes=20_000)
    with served(create_app(ranker, config)) as c:
        yield c


class Gated:
    """A ranker whose forward passes wait until the test opens the gate; records the size of each batch."""

    def __init__(self, ranker: HeadRanker):
        self.ranker = ranker
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.batches_run: list[int] = []

    def __getattr__(self, name):  # the rest (its tokenizer, for the query limit) is the ranker's
        return getattr(self.ranker, name)

    def run_list(self, query, documents):
        return self.ranker.run_list(query, documents)

    def batches(self, prompts):
        return self.ranker.batches(prompts)

    def score_many(self, prompts):
        self.entered.set()
        self.gate.wait(60)
        self.batches_run.append(len(prompts))
        return self.ranker.score_many(prompts)

    def finish(self, run):
        return self.ranker.finish(run)


def test_cohere_jina_shape(client, ranker):
    docs = [*DOCS[:3], {"text": DOCS[3], "title": "Goldfish"}, {"text": DOCS[4]}]
    answer = client.post("/v1/rerank", json={"model": "any", "query": FLEA_QUERY, "documents": docs})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "tiny" and body["usage"] == {"documents": 5} and body["id"]
    raw = ranker.score(FLEA_QUERY, [*DOCS[:3], {"text": DOCS[3], "title": "Goldfish"}, DOCS[4]])
    expected = relevance_scores(raw)
    results = body["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3, 4]
    assert [r["relevance_score"] for r in results] == sorted(expected, reverse=True)
    assert all(r["relevance_score"] == pytest.approx(expected[r["index"]]) for r in results)
    assert all(0 < r["relevance_score"] < 1 for r in results)
    assert [r["index"] for r in results] == sorted(range(5), key=lambda i: -raw[i])  # the ranking is kept
    raw_answer = client.post("/v1/rerank", json={"query": FLEA_QUERY, "documents": docs, "raw_scores": True})
    assert [r["relevance_score"] for r in raw_answer.json()["results"]] == pytest.approx(sorted(raw, reverse=True))
    shown = [{"text": d} if isinstance(d, str) else d for d in docs]
    assert all(r["document"] == shown[r["index"]] for r in results)

    cut = client.post(
        "/v1/rerank", json={"query": FLEA_QUERY, "documents": docs, "top_n": 2, "return_documents": False}
    )
    assert cut.json()["results"] == [{k: v for k, v in r.items() if k != "document"} for r in results[:2]]


def test_text_embeddings_inference_shape(client, ranker):
    answer = client.post("/rerank", json={"query": FLEA_QUERY, "texts": DOCS, "return_text": True, "truncate": True})
    assert answer.status_code == 200, answer.text
    raw = ranker.score(FLEA_QUERY, DOCS)
    expected = relevance_scores(raw)
    assert [r["score"] for r in answer.json()] == pytest.approx(sorted(expected, reverse=True))
    assert all(
        r["text"] == DOCS[r["index"]] and r["score"] == pytest.approx(expected[r["index"]]) for r in answer.json()
    )
    raw_answer = client.post("/rerank", json={"query": FLEA_QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert [r["score"] for r in raw_answer] == pytest.approx(sorted(raw, reverse=True))
    assert "text" not in client.post("/rerank", json={"query": FLEA_QUERY, "texts": DOCS}).json()[0]
    assert client.post("/rerank", json={"query": FLEA_QUERY, "texts": []}).json() == []


def test_cohere_v2_shape(client, ranker):
    answer = client.post("/v2/rerank", json={"model": "m", "query": FLEA_QUERY, "documents": DOCS, "top_n": 3})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] and body["meta"]["api_version"]["version"] == "2" and body["model"] == "tiny"
    expected = relevance_scores(ranker.score(FLEA_QUERY, DOCS))
    assert [r["index"] for r in body["results"]] == sorted(range(5), key=lambda i: -expected[i])[:3]
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
    cut = client.post("/v2/rerank", json={"query": FLEA_QUERY, "documents": DOCS, "max_tokens_per_doc": 2}).json()
    tokenizer = ranker.builder.tokenizer
    short = [tokenizer.decode(tokenizer(d, add_special_tokens=False)["input_ids"][:2]) for d in DOCS]
    assert [r["relevance_score"] for r in cut["results"]] == pytest.approx(
        sorted(relevance_scores(ranker.score(FLEA_QUERY, short)), reverse=True)
    )


def test_health_and_openapi(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny"
    assert 0 < health["rss_mb"] <= health["peak_rss_mb"] + 1  # now, and the process's peak
    assert "since it started" in client.get("/openapi.json").json()["components"]["schemas"]["Health"]["properties"][
        "peak_rss_mb"
    ].get("description", "")
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/health"} <= set(schema["paths"])
    requests = schema["components"]["schemas"]
    assert requests["RerankRequestV2"]["properties"]["documents"]["maxItems"] == 8  # the server's own limit
    assert requests["TeiRequest"]["properties"]["query"]["minLength"] == 1
    errors = schema["paths"]["/v2/rerank"]["post"]["responses"]
    assert {"200", "400", "413", "422", "429"} <= set(errors)
    assert errors["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationErrorBody")


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/rerank", {"documents": DOCS}, 422, "query: Field required"),
        ("/v1/rerank", {"query": "", "documents": DOCS}, 422, "query is empty"),
        ("/v1/rerank", {"query": "  ", "documents": DOCS}, 422, "query is empty"),
        ("/v1/rerank", {"query": FLEA_QUERY, "documents": ["a", 5]}, 422, "documents.1"),
        ("/v1/rerank", {"query": FLEA_QUERY, "documents": [{"title": "t"}]}, 422, "documents.0"),
        ("/v1/rerank", {"query": FLEA_QUERY, "documents": "fleas"}, 422, "documents"),
        ("/v1/rerank", {"query": FLEA_QUERY, "documents": DOCS, "top_n": 0}, 422, "top_n"),
        ("/v1/rerank", {"query": FLEA_QUERY, "documents": DOCS * 2}, 422, "at most 8 documents per request, got 10"),
        ("/rerank", {"query": FLEA_QUERY, "texts": DOCS * 2}, 422, "at most 8 documents"),
        ("/rerank", {"query": FLEA_QUERY, "texts": [None]}, 422, "texts.0"),
        ("/rerank", {"query": "", "texts": DOCS}, 422, "query is empty"),
        ("/rerank", {"texts": DOCS}, 422, "query: Field required"),
        ("/v2/rerank", {"query": " ", "documents": DOCS}, 422, "query is empty"),
        ("/v2/rerank", {"query": FLEA_QUERY, "documents": [{"text": "x"}]}, 422, "documents.0"),
        ("/v2/rerank", {"query": FLEA_QUERY, "documents": DOCS, "max_tokens_per_doc": 0}, 422, "max_tokens_per_doc"),
        ("/v1/rerank", {"query": FLEA_QUERY, "documents": ["x " * 400]}, 422, "tokens but the model takes"),
    ],
)
def test_bad_input_gets_a_clear_4xx(client, path, body, status, message):
    answer = client.post(path, json=body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["detail"]


def test_malformed_json_and_oversized_bodies(client):
    answer = client.post(
        "/v1/rerank", content=b'{"query": "fleas", "documents": [', headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400 and "not valid JSON" in answer.json()["detail"]
    big = {"query": FLEA_QUERY, "documents": ["fleas " * 1000] * 4}
    answer = client.post("/v1/rerank", json=big)
    assert answer.status_code == 413 and "over 20000 bytes" in answer.json()["detail"]
    chunked = client.post("/v1/rerank", content=iter([b"x" * 15_000] * 2), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    assert client.get("/health").status_code == 200  # the server is still up


def test_concurrent_requests_score_as_sequential_ones(client, ranker):
    requests = [
        ("/v1/rerank", {"query": q, "documents": DOCS[:n]}) for q in (FLEA_QUERY, "what is wifi") for n in (1, 3, 5)
    ]
    requests += [
        ("/rerank", {"query": "goldfish tank size", "texts": DOCS[::-1]}),
        ("/rerank", {"query": "war", "texts": DOCS[:2]}),
    ]
    requests = [(path, {**body, "raw_scores": True}) for path, body in requests]  # raw: more digits to differ in

    def answer(request) -> object:
        body = client.post(request[0], json=request[1]).json()
        return {k: v for k, v in body.items() if k != "id"} if isinstance(body, dict) else body  # ids are unique

    sequential = [answer(r) for r in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        concurrent = list(pool.map(answer, requests * 2))
    assert concurrent == sequential * 2
    assert len(ranker.score_lists(FLEA_QUERY, DOCS)) > 1  # the interleaving covered multi-pass lists


def test_full_queue_answers_429(ranker):
    gated = Gated(ranker)
    body = {"query": FLEA_QUERY, "documents": DOCS}
    with (
        served(create_app(gated, ServeConfig(queue_size=1, max_active=1, warm_up=False))) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        running = pool.submit(client.post, "/v1/rerank", json=body)
        assert gated.entered.wait(60)  # the worker holds the first request
        waiting = pool.submit(client.post, "/v1/rerank", json=body)
        while client.get("/health").json()["waiting"] < 1:
            time.sleep(0.01)
        refused = client.post("/v1/rerank", json=body)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "retry later" in refused.json()["detail"]
        gated.gate.set()
        assert running.result().status_code == 200 and waiting.result().status_code == 200
        assert running.result().json()["results"] == waiting.result().json()["results"]
        assert running.result().json()["id"] != waiting.result().json()["id"]


def test_a_long_list_does_not_hold_back_a_short_one(ranker):
    gated = Gated(ranker)
    scheduler = Scheduler(gated, queue_size=4, max_active=4)
    scheduler.start()
    done = []
    try:
        long = scheduler.submit(FLEA_QUERY, DOCS * 3)
        assert gated.entered.wait(60)
        short = scheduler.submit("what is wifi", DOCS[:2])
        long.add_done_callback(lambda _: done.append("long"))
        short.add_done_callback(lambda _: done.append("short"))
        gated.gate.set()
        assert short.result(60) == ranker.score("what is wifi", DOCS[:2])
        assert long.result(60) == ranker.score(FLEA_QUERY, DOCS * 3)
    finally:
        scheduler.stop()
    assert len(ranker.score_lists(FLEA_QUERY, DOCS * 3)) >= 4
    assert done == ["short", "long"]


def test_one_pass_serves_the_prompts_of_several_requests():
    """With a budget that holds them, the waiting requests' prompts share forward passes, and each answer is
    the one the ranker gives alone."""
    wide = Gated(HeadRanker(tiny_backbone(), RankerConfig(max_length=MAX_LENGTH, max_batch_tokens=100_000)))
    scheduler = Scheduler(wide, queue_size=8, max_active=8)
    requests = [(FLEA_QUERY, DOCS), ("what is wifi", DOCS[:2]), ("goldfish tank", DOCS * 2)]
    futures = [scheduler.submit(q, d) for q, d in requests]  # queued before the worker starts
    wide.gate.set()
    scheduler.start()
    try:
        answers = [f.result(60) for f in futures]
    finally:
        scheduler.stop()
    prompts = sum(wide.ranker.rank(q, d).prompts for q, d in requests)  # split lists' later rounds included
    assert prompts > sum(len(wide.ranker.prompts(q, d)) for q, d in requests)
    assert sum(wide.batches_run) == prompts and max(wide.batches_run) > 1
    assert len(wide.batches_run) < prompts
    for (q, d), answer in zip(requests, answers):
        alone = wide.ranker.score(q, d)
        assert max(abs(a - b) for a, b in zip(alone, answer)) <= 1e-5 * max(map(abs, alone))


def test_scheduler_refuses_when_full_and_checks_input(ranker):
    scheduler = Scheduler(ranker, queue_size=1)  # not started: nothing leaves the queue
    scheduler.submit(FLEA_QUERY, DOCS)
    with pytest.raises(QueueFull):
        scheduler.submit(FLEA_QUERY, DOCS)
    with pytest.raises(TypeError, match="document 0"):
        scheduler.submit(FLEA_QUERY, [3])
    with pytest.raises(ValueError, match="queue_size"):
        ServeConfig(queue_size=0)


def test_headrank_serve_command(tmp_path, monkeypatch):
    """The command loads the model once and hands uvicorn the app; here uvicorn serves it in a thread."""
    import types

    import headrank.serve.runner

    started = {}

    def http_server(app, grace, host, port, **options):
        return types.SimpleNamespace(run=lambda sockets: started.update(app=app, host=host, port=port, sockets=sockets))

    monkeypatch.setattr(headrank.serve.runner, "http_server", http_server)
    folder = save_tiny(tmp_path / "tiny")
    assert main(["serve", "--model", str(folder), "--port", "0", "--name", "tiny-cli", "--max-documents", "2"]) == 0
    (sock,) = started["sockets"]  # bound before the model loaded, on a port of the system's choosing
    assert (started["host"], started["port"]) == ("127.0.0.1", 0) and sock.getsockname()[1] > 0
    sock.close()
    with served(started["app"]) as client:
        assert client.get("/health").json()["model"] == "tiny-cli"
        answer = client.post("/rerank", json={"query": FLEA_QUERY, "texts": DOCS[:2]})
        assert answer.status_code == 200 and len(answer.json()) == 2
        assert client.post("/rerank", json={"query": FLEA_QUERY, "texts": DOCS[:3]}).status_code == 422


def test_serve_refuses_a_folder_that_is_not_an_artifact(tmp_path, capsys):
    assert main(["serve", "--artifact", str(tmp_path)]) == 2
    assert "is not a trained artifact folder" in capsys.readouterr().err


def test_serve_with_no_model_options_serves_the_committed_headrank(monkeypatch):
    """As `eval` does: the product's own trained method, not ICR; `--heads all` asks for ICR."""
    import headrank.methods
    from headrank.artifact import DEFAULT_ARTIFACT

    loaded = []

    def fake_load(plan):
        loaded.append((plan.loader, plan.kwargs.get("folder") or plan.kwargs["model"], plan.kwargs.get("heads")))
        raise SystemExit(0)  # stop before the server starts

    monkeypatch.setattr(headrank.methods, "load_plan", fake_load)
    for argv in (["serve"], ["serve", "--heads", "all"], ["serve", "--model", "Qwen/Qwen3-0.6B"]):
        with pytest.raises(SystemExit):
            main(argv)
    assert loaded == [
        ("artifact", str(DEFAULT_ARTIFACT), None),
        ("heads", "embedded", "all"),
        ("heads", "Qwen/Qwen3-0.6B", "all"),
    ]


BAD_BODIES = [
    # (raw body, status, words the message must hold): valid JSON that no client should get a 500 for
    ('{"query":"fleas \\ud800","documents":["a"]}', 422, "surrogate"),
    ('{"query":"fleas","documents":["a \\udfff b"]}', 422, "surrogate"),
    ('{"query":"fleas","documents":[{"text":"a","title":"\\ud834"}]}', 422, "surrogate"),
    ('{"query":"fleas","documents":["a"],"top_n":1e400}', 422, "top_n"),
    ('{"query":"fleas","documents":["a"],"top_n":NaN}', 422, "top_n"),
    ('{"query":"fleas","documents":["a"],"raw_scores":Infinity}', 422, "raw_scores"),
    ('{"query":-Infinity,"documents":["a"]}', 422, "query"),
    (b'{"query":"fleas","documents":["\\xff\\xfe"]}', 400, "not valid JSON"),
    (b'{"query":"fleas","documents":["\xff\xfe"]}', 400, "not valid JSON: it is not UTF-8 text"),
    ("[" * 5000 + "]" * 5000, 400, "not valid JSON: it is nested too deeply to parse"),
]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_bad_input_gets_a_readable_4xx_never_a_500(client, path):
    for raw, status, words in BAD_BODIES:
        if path == "/rerank" and words == "top_n":
            words = "raw_scores"  # TEI has no top_n: the same numbers go into a field it has
        body = raw if isinstance(raw, bytes) else raw.encode()
        if path == "/rerank":
            body = body.replace(b'"documents"', b'"texts"').replace(b'"top_n"', b'"raw_scores"')
        if path != "/v1/rerank" and b"title" in body:
            status, words = 422, "valid string"  # v2 and TEI take plain strings only
        answer = client.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status, (path, raw[:80], answer.text[:300])
        assert words in answer.json()["detail"], (path, raw[:80], answer.json()["detail"][:300])
    surrogate = {"query": "fleas", "documents": ["a \ud800"], "max_tokens_per_doc": 2}
    answer = client.post("/v2/rerank", content=json.dumps(surrogate), headers={"content-type": "application/json"})
    assert answer.status_code == 422 and "surrogate" in answer.json()["detail"]


def test_any_string_or_number_in_any_field_gets_an_answer_not_a_500(client):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    lone = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
    texts = st.one_of(
        st.text(max_size=8), st.builds(lambda a, s, b: a + s + b, st.text(max_size=3), lone, st.text(max_size=3))
    )
    numbers = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e400, 3.5, -1])
    values = st.one_of(texts, numbers, st.none(), st.booleans())
    fields = ["query", "documents", "top_n", "return_documents", "raw_scores", "max_tokens_per_doc", "model"]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(fields), values, st.sampled_from(["/v1/rerank", "/v2/rerank"]), texts)
    def check(field, value, path, document):
        body = {"query": "fleas", "documents": [document or "a"], field: value}
        answer = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
        if answer.status_code == 200:  # one document in, its one result out
            (result,) = answer.json()["results"]
            assert result["index"] == 0 and math.isfinite(result["relevance_score"]), body
        else:  # refused, naming the field that is wrong (or the document)
            assert answer.status_code == 422, (body, answer.text[:200])
            assert answer.json()["detail"].split(":")[0].split(".")[0] in (field, "documents"), (body, answer.text)

    check()
