"""What an operator runs the service with, over a real socket with the tiny model: Prometheus metrics that move by
exactly what was sent, request ids and timing headers, API keys, readiness and liveness, CORS, and requests whose
repeated or empty documents and long queries cost no more than their distinct passages and a bounded query."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")  # the `serve` extra
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from headrank.serve.app import ServeConfig, create_app  # noqa: E402
from headrank.serve.auth import load_keys  # noqa: E402
from headrank.serve.limits import distinct  # noqa: E402
from headrank.serve.metrics import TIMING_HEADERS, RequestIdFilter  # noqa: E402

from .conftest import DOCS, FLEA_QUERY, served  # noqa: E402
from .test_serve_socket import BOUND_S, Layers, signalled_server, tiny, until  # noqa: E402

KEY = "hr-test-key-4f1c9a"


def scrape(client: httpx.Client, **headers) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def moved(before: dict, after: dict) -> dict:
    """The samples that changed, by how much (a sample new in `after` moved from 0)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def every_prompt(ranker, query: str, documents: list) -> list:
    """The prompts the server scores for a request: its distinct documents' windows, then a split list's later
    rounds (headrank/rounds.py)."""
    run, scored = ranker.run_list(query, distinct(documents)[0]), []
    while run.prompts:
        scored += run.prompts
        run.advance(ranker.score_many(run.prompts))
    return scored


def tokens(ranker, query: str, documents: list) -> int:
    return sum(len(p.input_ids) for p in every_prompt(ranker, query, documents))


@contextlib.contextmanager
def logged(*names: str) -> Iterator[list[logging.LogRecord]]:
    """The records the named loggers write meanwhile (at INFO), each given its request id as the service's log
    configuration gives it."""
    records, handler = [], logging.Handler()
    handler.emit = records.append
    handler.addFilter(RequestIdFilter())
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


def request_lines(records) -> list[dict]:
    return [json.loads(r.getMessage()) for r in records if r.name == "headrank.requests"]


def test_metrics_move_by_exactly_what_was_sent():
    ranker = tiny()
    app = create_app(ranker, ServeConfig(queue_size=1, max_active=1, max_documents=20))
    sent = [
        ("/v1/rerank", {"query": FLEA_QUERY, "documents": DOCS}),
        ("/v2/rerank", {"query": "what is wifi", "documents": [DOCS[0], DOCS[2], DOCS[0], ""]}),
    ]
    with served(app) as client, ThreadPoolExecutor(2) as pool:
        until(lambda: client.get("/health").status_code == 200)  # warm: its pass is counted before `before`
        before = scrape(client)
        assert all(client.post(path, json=body).status_code == 200 for path, body in sent)
        assert client.post("/rerank", json={"query": "", "texts": DOCS}).status_code == 422
        layers = Layers(ranker)  # hold the worker inside the next pass: one request served, one waiting, one refused
        held = pool.submit(client.post, "/v1/rerank", json={"query": "war", "documents": DOCS[:2]})
        assert layers.held.wait(BOUND_S)
        waiting = pool.submit(client.post, "/v1/rerank", json={"query": "goldfish", "documents": DOCS[3:]})
        until(lambda: scrape(client)[("headrank_queue_waiting", ())] == 1)
        busy = scrape(client)
        refused = client.post("/v1/rerank", json={"query": "fleas", "documents": DOCS[:1]})
        layers.release()
        assert refused.status_code == 429 and held.result().status_code == waiting.result().status_code == 200
        after = scrape(client)
    assert busy[("headrank_requests_active", ())] == 1
    assert after[("headrank_queue_waiting", ())] == after[("headrank_requests_active", ())] == 0
    scored = [*sent, ("/v1/rerank", {"query": "war", "documents": DOCS[:2]})]
    scored += [("/v1/rerank", {"query": "goldfish", "documents": DOCS[3:]})]
    v1 = [b for p, b in scored if p == "/v1/rerank"]
    prompts = [p for _, b in scored for p in every_prompt(ranker, b["query"], b["documents"])]
    delta = moved(before, after)
    route = lambda r: (("route", r),)  # noqa: E731
    counts = {k[1]: v for k, v in delta.items() if k[0] == "headrank_requests_total"}
    assert {k: v for k, v in counts.items() if "rerank" in k[0][1]} == {
        (("route", "/v1/rerank"), ("status", "200")): 3,
        (("route", "/v1/rerank"), ("status", "429")): 1,
        (("route", "/v2/rerank"), ("status", "200")): 1,
        (("route", "/rerank"), ("status", "422")): 1,
    }
    for path in {labels[0][1] for labels in counts}:  # every route's latency histogram counts its requests
        answered = sum(v for labels, v in counts.items() if labels[0][1] == path)
        assert delta[("headrank_request_duration_seconds_count", route(path))] == answered
    assert delta[("headrank_documents_total", route("/v1/rerank"))] == sum(len(b["documents"]) for b in v1) == 9
    assert delta[("headrank_documents_total", route("/v2/rerank"))] == 4
    assert delta[("headrank_passages_total", route("/v2/rerank"))] == 3  # DOCS[0] twice: one passage
    assert delta[("headrank_prompt_tokens_total", route("/v1/rerank"))] == sum(tokens(ranker, **b) for b in v1)
    assert delta[("headrank_prompt_tokens_total", route("/v2/rerank"))] == tokens(ranker, **sent[1][1])
    assert delta[("headrank_pass_prompts_count", ())] == delta[("headrank_pass_prompts_sum", ())] == len(prompts)
    assert delta[("headrank_pass_padded_tokens_sum", ())] == sum(len(p.input_ids) for p in prompts)  # one per pass
    assert delta[("headrank_tokenize_seconds_count", ())] == len(scored) + 1 == 5  # the scored and the refused one
    assert delta[("headrank_queue_seconds_count", ())] == delta[("headrank_inference_seconds_count", ())] == 4
    assert after[("headrank_ready", ())] == 1


def test_the_request_id_round_trips_through_header_body_and_log():
    ranker = tiny()
    app = create_app(ranker, ServeConfig(model_name="tiny"))
    with served(app) as client, logged("headrank.requests", "uvicorn.access") as records:
        answer = client.post(
            "/v1/rerank", json={"query": FLEA_QUERY, "documents": DOCS}, headers={"X-Request-Id": "trace-7:a/b"}
        )
        made = client.post("/v2/rerank", json={"query": FLEA_QUERY, "documents": DOCS}, headers={"X-Request-Id": "a b"})
        refused = client.post("/rerank", json={"query": FLEA_QUERY, "texts": "no"})
    assert answer.headers["x-request-id"] == answer.json()["id"] == "trace-7:a/b"
    new = made.headers["x-request-id"]  # an id with a space is not taken: a new one is made
    assert new != "a b" and len(new) == 32 and made.json()["id"] == new
    lines = {line["request_id"]: line for line in request_lines(records)}
    line = lines["trace-7:a/b"]
    assert {k: line[k] for k in ("method", "route", "status", "documents", "passages")} == {
        "method": "POST", "route": "/v1/rerank", "status": 200, "documents": 5, "passages": 5,
    }  # fmt: skip
    assert line["prompt_tokens"] == tokens(ranker, FLEA_QUERY, DOCS)
    assert all(line[k] >= 0 for k in ("queue_ms", "tokenize_ms", "inference_ms"))
    assert line["queue_ms"] + line["tokenize_ms"] + line["inference_ms"] <= line["total_ms"]
    assert lines[refused.headers["x-request-id"]]["status"] == 422 and lines[new]["route"] == "/v2/rerank"
    access = [r for r in records if r.name == "uvicorn.access" and "/v1/rerank" in r.getMessage()]
    assert [r.request_id for r in access] == ["trace-7:a/b"]  # uvicorn's own line about it carries it too
    for reply in (answer, made, refused):  # every answer, a refusal too, has TEI's timings in whole ms
        timings = {name: int(reply.headers[name]) for name in TIMING_HEADERS}
        assert timings["x-total-time"] == timings["x-compute-time"] >= timings["x-inference-time"]
    assert int(refused.headers["x-inference-time"]) == 0


@pytest.fixture(scope="module")
def keyed():
    ranker = tiny()
    with served(create_app(ranker, ServeConfig(model_name="tiny", api_keys=(KEY, "k2")))) as client:
        yield client


def test_a_key_is_required_everywhere_but_the_probes_and_is_never_shown(keyed):
    body = {"query": FLEA_QUERY, "documents": DOCS}
    with logged("headrank", "uvicorn", "uvicorn.access", "uvicorn.error") as records:
        answers = {
            "none": keyed.post("/v1/rerank", json=body),
            "wrong": keyed.post("/v1/rerank", json=body, headers={"Authorization": f"Bearer {KEY}x"}),
            "basic": keyed.post("/v1/rerank", json=body, headers={"Authorization": f"Basic {KEY}"}),
            "right": keyed.post("/v1/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}),
            "second": keyed.post("/rerank", json={"query": "x", "texts": DOCS}, headers={"Authorization": "bearer k2"}),
            "models": keyed.get("/v1/models"),
            "health": keyed.get("/health"),
            "ping": keyed.get("/ping"),
            "metrics": keyed.get("/metrics"),
        }  # fmt: skip
    assert {k: a.status_code for k, a in answers.items()} == {
        "none": 401, "wrong": 401, "basic": 401, "right": 200, "second": 200, "models": 401, "health": 200,
        "ping": 200, "metrics": 200,
    }  # fmt: skip
    assert answers["none"].json() == {"detail": "no API key: send the header 'Authorization: Bearer <key>'"}
    assert answers["wrong"].json() == {"detail": "the API key is not valid"}
    assert answers["wrong"].headers["www-authenticate"] == "Bearer" and "x-request-id" in answers["wrong"].headers
    shown = [a.text + json.dumps(dict(a.headers)) for a in answers.values()]
    shown += [r.getMessage() for r in records]
    assert records and not any(KEY in text for text in shown)
    assert KEY not in repr(ServeConfig(api_keys=(KEY,)))
    schema = keyed.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" in schema["paths"]["/v1/rerank"]["post"]["responses"]
    assert "security" not in schema["paths"]["/health"]["get"]


def test_metrics_need_the_key_when_told_to():
    with served(create_app(tiny(), ServeConfig(api_keys=(KEY,), metrics_need_key=True, warm_up=False))) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_keys_come_from_flags_a_file_and_the_environment(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# ops keys\nfile-key-1\n\n  file-key-2  \n")
    assert load_keys(["flag-key"], keys, {"HEADRANK_API_KEY": "env-key"}) == (
        "flag-key", "file-key-1", "file-key-2", "env-key",
    )  # fmt: skip
    assert load_keys([], None, {}) == ()
    keys.write_text("a key with spaces\n")
    with pytest.raises(ValueError, match="line 1: an API key must be non-empty") as refused:
        load_keys([], keys, {})
    assert "spaces" not in str(refused.value).split(":")[0]  # where it came from, never the key
    with pytest.raises(ValueError, match="api_keys"):
        ServeConfig(api_keys=("",))


def test_health_is_503_until_the_warm_up_pass_and_after_sigterm():
    ranker = tiny()
    layers = Layers(ranker)  # holds the warm-up pass
    app = create_app(ranker, ServeConfig(shutdown_grace=1.0))
    with signalled_server(app, 1.0) as (server, thread, url):
        base = url.removesuffix("/v1/rerank")
        assert layers.held.wait(BOUND_S)
        warming = httpx.get(f"{base}/health")
        assert warming.status_code == 503 and warming.json()["status"] == "warming up"
        assert httpx.get(f"{base}/ping").json() == {"status": "ok"}  # liveness never waits on the worker
        layers.release()
        until(lambda: httpx.get(f"{base}/health").status_code == 200)
        models = httpx.get(f"{base}/v1/models").json()
        assert httpx.get(f"{base}/models").json() == models
        server.handle_exit(signal.SIGTERM, None)
        closing = asyncio.run(_asgi_get(app, "/health"))  # the listener closes at once: ask the app itself
        thread.join(BOUND_S)
    assert closing.status_code == 503 and closing.json()["status"] == "shutting down"
    assert closing.headers["retry-after"] == "1"
    (card,) = models["data"]
    assert models["object"] == "list" and card["object"] == "model" and card["id"] == "headrank"
    assert card["ranker"]["heads"] == ranker.config.heads.describe() and card["artifact"] is None


async def _asgi_get(app, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        return await client.get(path)


def test_cors_is_off_by_default_and_on_for_the_origins_given():
    page = {"Origin": "https://search.example.com"}
    preflight = {**page, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    body = {"query": FLEA_QUERY, "documents": DOCS[:2]}
    with served(create_app(tiny(), ServeConfig(warm_up=False))) as client:
        plain = client.post("/v1/rerank", json=body, headers=page)
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
        assert client.options("/v1/rerank", headers=preflight).status_code == 405
    config = ServeConfig(warm_up=False, cors_origins=("https://search.example.com",), api_keys=(KEY,))
    with served(create_app(tiny(), config)) as client:
        allowed = client.options("/v1/rerank", headers=preflight)  # a preflight carries no key
        assert allowed.status_code == 200 and "authorization" in allowed.headers["access-control-allow-headers"].lower()
        answer = client.post("/v1/rerank", json=body, headers={**page, "Authorization": f"Bearer {KEY}"})
        assert answer.headers["access-control-allow-origin"] == "https://search.example.com"
        assert "x-request-id" in answer.headers["access-control-expose-headers"]
        other = client.options("/v1/rerank", headers={**preflight, "Origin": "https://elsewhere.example"})
        assert other.status_code == 400


def test_repeated_and_empty_documents_cost_one_passage_each():
    ranker = tiny()
    docs = ["", "\u200b", DOCS[0], DOCS[0], DOCS[1], " ", DOCS[0]]
    with served(create_app(ranker, ServeConfig(warm_up=False))) as client, logged("headrank.requests") as records:
        answer = client.post("/rerank", json={"query": FLEA_QUERY, "texts": docs, "raw_scores": True})
        empties = client.post("/v1/rerank", json={"query": FLEA_QUERY, "documents": [""] * 999})
    empty, first, second = ranker.score(FLEA_QUERY, ["", DOCS[0], DOCS[1]])
    scores = {r["index"]: r["score"] for r in answer.json()}
    assert scores == dict(enumerate([empty, empty, first, first, second, empty, first]))
    lines = request_lines(records)
    assert (lines[0]["documents"], lines[0]["passages"]) == (7, 3)
    assert lines[0]["prompt_tokens"] == tokens(ranker, FLEA_QUERY, ["", DOCS[0], DOCS[1]])
    assert empties.status_code == 200 and len(empties.json()["results"]) == 999
    assert (lines[1]["passages"], lines[1]["prompt_tokens"]) == (1, tokens(ranker, FLEA_QUERY, [""]))


def test_a_long_query_is_cut_to_the_query_limit_or_refused_with_truncate_false():
    ranker = tiny()
    tokenizer = ranker.builder.tokenizer
    query = "how long do fleas live on a dog and on a cat in the house " * 20
    ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    cut = tokenizer.decode(ids[:8])
    with served(create_app(ranker, ServeConfig(max_query_tokens=8, warm_up=False))) as client:
        answer = client.post("/v1/rerank", json={"query": query, "documents": DOCS, "raw_scores": True})
        tei = client.post("/rerank", json={"query": query, "texts": DOCS, "raw_scores": True})
        refused = client.post("/rerank", json={"query": query, "texts": DOCS, "truncate": False})
        short = client.post("/v1/rerank", json={"query": "fleas", "documents": DOCS})
    assert answer.json()["meta"]["warnings"] == [f"query cut to its first 8 of {len(ids)} tokens"]
    expected = ranker.score(cut, DOCS)
    assert {r["index"]: r["relevance_score"] for r in answer.json()["results"]} == dict(enumerate(expected))
    assert {r["index"]: r["score"] for r in tei.json()} == dict(enumerate(expected))
    assert refused.status_code == 422
    assert (
        refused.json()["detail"] == f"query: {len(ids)} tokens, over the query limit (8 tokens), and truncate is false"
    )
    assert "warnings" not in short.json()["meta"]
    with pytest.raises(ValueError, match="max_query_tokens"):
        ServeConfig(max_query_tokens=0)
