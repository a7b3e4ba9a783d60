"""The server keeps its promises, over a real socket on 127.0.0.1 with the tiny model: an answer does not depend on
the traffic that shares its pass, work stops when its client leaves or the shutdown grace ends (counted in layers
run, never timed), and odd bodies get a short answer that says what is wrong."""

from __future__ import annotations

import contextlib
import gzip
import json
import signal
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import torch

httpx = pytest.importorskip("httpx")  # the `serve` extra
pytest.importorskip("uvicorn")
pytest.importorskip("fastapi")

from headrank.engine.prompt import PromptTemplate  # noqa: E402
from headrank.engine.testing import save_tiny, tiny_backbone  # noqa: E402
from headrank.ranker import HeadRanker, RankerConfig  # noqa: E402
from headrank.serve.app import ServeConfig, create_app  # noqa: E402
from headrank.serve.runner import http_server  # noqa: E402

from .conftest import DOCS, FLEA_QUERY, log_records, served  # noqa: E402

MAX_LENGTH = 150
"""tokens per pass: five test documents need two passes, fifteen need five."""
BOUND_S = 60
"""how long a test waits for something that must happen before it fails (a bound, never a measurement)."""
HOLD_S = 2 * BOUND_S
"""how long a held layer or tokenizing waits for the test to let it go."""


class Layers:
    """Forward pre-hooks on every decoder layer of a ranker's model: they count the layers entered, and the first
    entry into layer `hold` waits until the test calls `release` (the worker is then inside a pass; a test that
    fails first is let go after HOLD_S, so that it ends)."""

    def __init__(self, ranker: HeadRanker, hold: int | None = 1):
        self.entered = 0
        self.held = threading.Event()
        self._gate = threading.Event()
        self._hold = hold
        for index, layer in enumerate(ranker.family.layers):
            layer.register_forward_pre_hook(lambda module, args, index=index: self._enter(index))

    def _enter(self, index: int) -> None:
        self.entered += 1
        if index == self._hold and not self.held.is_set():
            self.held.set()
            self._gate.wait(HOLD_S)

    def release(self) -> None:
        self._gate.set()


def tiny(dtype: torch.dtype = torch.float32, **config) -> HeadRanker:
    backbone = tiny_backbone()
    backbone.model.to(dtype)
    return HeadRanker(backbone, RankerConfig(max_length=MAX_LENGTH, **config))


def submitted(app) -> list[Future]:
    """The futures the app's scheduler hands back, as each submission returns (its list tokenized)."""
    scheduler, futures = app.state.scheduler, []
    submit = scheduler.submit

    def recording(*args):
        futures.append(submit(*args))
        return futures[-1]

    scheduler.submit = recording
    return futures


def held_tokenizing(ranker: HeadRanker) -> tuple[threading.Event, threading.Event]:
    """Make the ranker's tokenizing wait: (set once a list is being tokenized, set it to let that go on)."""
    tokenizing, resume = threading.Event(), threading.Event()
    prompts = ranker.prompts

    def held(query, documents):
        tokenizing.set()
        resume.wait(HOLD_S)
        return prompts(query, documents)

    ranker.prompts = held
    return tokenizing, resume


@contextlib.contextmanager
def access_log() -> Iterator[list]:
    """The records uvicorn's access log writes meanwhile (the server's own 499 line among them)."""
    with log_records("uvicorn.access") as records:
        yield records


def until(condition) -> None:
    """Wait for `condition` (polling); fail if it does not hold within BOUND_S."""
    pause = threading.Event()
    for _ in range(BOUND_S * 100):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError("the condition did not come true")


def raw_post(client: httpx.Client, path: str, body: dict) -> socket.socket:
    """Send a POST over a socket of our own, so that the test decides when the client hangs up."""
    data = json.dumps(body).encode()
    sock = socket.create_connection((client.base_url.host, client.base_url.port))
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    sock.sendall(head.encode() + data)
    return sock


def idle(client: httpx.Client) -> bool:
    health = client.get("/health").json()
    return health["active"] == 0 and health["waiting"] == 0


def gone(records: list) -> bool:
    return any(r.getMessage().endswith('"POST /v1/rerank HTTP/1.1" 499') for r in list(records))


@contextlib.contextmanager
def signalled_server(app, grace: float) -> Iterator[tuple[object, threading.Thread, str]]:
    """uvicorn with the service's SIGTERM grace, on a free port, in a thread: (server, thread, rerank url)."""
    server = http_server(app, grace, log_level="warning")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        until(lambda: server.started)
        yield server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}/v1/rerank"


# -- work stops when nobody wants it ------------------------------------------------------------------------------


def test_a_client_that_goes_away_stops_the_pass_it_is_in_at_the_next_layer():
    ranker = tiny()
    layers = Layers(ranker)
    app = create_app(ranker, ServeConfig(warm_up=False))
    jobs = submitted(app)
    with served(app) as client:
        documents = [f"{d} ({n})" for n in range(3) for d in DOCS]  # distinct: a repeated one is scored once
        sock = raw_post(client, "/v1/rerank", {"query": "gone", "documents": documents})
        assert layers.held.wait(BOUND_S)  # the worker is inside the first pass of a five-pass list
        entered = layers.entered
        sock.close()
        until(lambda: jobs and jobs[0].cancelled())  # the server saw the client leave
        layers.release()
        until(lambda: idle(client))
        assert layers.entered == entered  # not one more layer of that pass, nor any of its other passes
        answer = client.post("/v1/rerank", json={"query": FLEA_QUERY, "documents": DOCS, "raw_scores": True})
    assert [r["relevance_score"] for r in answer.json()["results"]] == sorted(ranker.score(FLEA_QUERY, DOCS))[::-1]


def test_a_client_that_goes_away_while_its_list_is_tokenized_never_reaches_the_model():
    ranker = tiny()
    layers = Layers(ranker, hold=None)
    tokenizing, resume = held_tokenizing(ranker)
    app = create_app(ranker, ServeConfig(warm_up=False))
    jobs = submitted(app)
    with served(app) as client, access_log() as lines:
        sock = raw_post(client, "/v1/rerank", {"query": "gone", "documents": DOCS})
        assert tokenizing.wait(BOUND_S)
        sock.close()
        until(lambda: gone(lines))  # answered 499 while the list was still being tokenized
        resume.set()
        until(lambda: jobs)
        until(lambda: idle(client))
    assert jobs[0].cancelled() and layers.entered == 0


def test_sigterm_answers_503_at_the_grace_and_exits_while_the_worker_is_inside_a_layer():
    """The request outlives the grace: 503 with Retry-After. The server exits although the worker is held inside
    a layer, and once let go the worker leaves at the next layer without running it."""
    ranker = tiny()
    layers = Layers(ranker)
    app = create_app(ranker, ServeConfig(shutdown_grace=1.0, warm_up=False))
    with signalled_server(app, 1.0) as (server, thread, url), ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url, json={"query": FLEA_QUERY, "documents": DOCS}, timeout=BOUND_S)
        assert layers.held.wait(BOUND_S)
        server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
        answer = pending.result()
        thread.join(BOUND_S)
        exited = not thread.is_alive()
        entered = layers.entered
        layers.release()
        stopped = app.state.scheduler.stop(BOUND_S)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert answer.json() == {"detail": "the server is shutting down; retry"}
    assert exited and stopped and layers.entered == entered


def test_sigterm_answers_503_to_a_request_still_being_tokenized():
    ranker = tiny()
    layers = Layers(ranker, hold=None)
    tokenizing, resume = held_tokenizing(ranker)
    app = create_app(ranker, ServeConfig(shutdown_grace=1.0, warm_up=False))
    with signalled_server(app, 1.0) as (server, thread, url), ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url, json={"query": FLEA_QUERY, "documents": DOCS}, timeout=BOUND_S)
        assert tokenizing.wait(BOUND_S)
        server.handle_exit(signal.SIGTERM, None)
        answer = pending.result()
        resume.set()  # a process exits without waiting for the tokenizing thread; a thread running uvicorn waits
        thread.join(BOUND_S)
    assert answer.status_code == 503 and answer.json() == {"detail": "the server is shutting down; retry"}
    assert not thread.is_alive() and layers.entered == 0


# -- an answer does not depend on what else is served ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_requests_batched_into_shared_passes_get_the_answers_they_get_alone(dtype):
    ranker = tiny(dtype, max_batch_tokens=100_000)
    layers = Layers(ranker, hold=None)
    requests = [
        ("/v1/rerank", {"query": FLEA_QUERY, "documents": DOCS}),
        ("/v1/rerank", {"query": "what is wifi", "documents": DOCS[:2]}),
        ("/v2/rerank", {"query": "goldfish tank size", "documents": DOCS[::-1] * 2}),
        ("/rerank", {"query": "war", "texts": DOCS[1:4]}),
    ]
    requests = [(path, {**body, "raw_scores": True}) for path, body in requests]

    def answer(client, request):
        body = client.post(request[0], json=request[1]).json()
        return body["results"] if isinstance(body, dict) else body

    app = create_app(ranker, ServeConfig(max_active=8, max_batch_requests=8, warm_up=False))
    with served(app) as client:
        alone = [answer(client, r) for r in requests]
        layers_alone = layers.entered
        hold = Layers(ranker)  # holds the worker in the first pass, so that the others queue behind it
        with ThreadPoolExecutor(len(requests)) as pool:
            first = pool.submit(answer, client, requests[0])
            assert hold.held.wait(BOUND_S)
            rest = [pool.submit(answer, client, r) for r in requests[1:]]
            until(lambda: client.get("/health").json()["waiting"] == len(rest))
            hold.release()
            batched = [first.result(), *(f.result() for f in rest)]
    assert batched == alone  # bit for bit
    assert layers.entered - layers_alone < layers_alone  # and the queued requests did share passes


# -- odd bodies: a short answer that says what is wrong -----------------------------------------------------------


@pytest.fixture(scope="module")
def ranker() -> HeadRanker:
    """Passages cut at 20 tokens: every test document fits, a longer text is cut."""
    return HeadRanker(tiny_backbone(), RankerConfig(template=PromptTemplate(max_passage_tokens=20)))


@pytest.fixture(scope="module")
def client(ranker):
    with served(create_app(ranker, ServeConfig(model_name="tiny", max_body_bytes=20_000))) as c:
        yield c


BODY = {"query": FLEA_QUERY, "documents": DOCS}


@pytest.mark.parametrize(
    ("content_type", "received"),
    [
        ("text/plain", "Content-Type 'text/plain'"),
        ("application/x-www-form-urlencoded", "Content-Type 'application/x-www-form-urlencoded'"),
        (None, "no Content-Type"),
    ],
)
def test_a_body_not_sent_as_json_gets_415_naming_its_content_type_and_no_echo(client, content_type, received):
    body = json.dumps({**BODY, "documents": ["fleas " * 2000]}).encode()  # 12 kB, under the limit
    headers = {"content-type": content_type} if content_type else {}
    answer = client.post("/v1/rerank", content=body, headers=headers)
    assert answer.status_code == 415 and len(answer.content) < 200
    assert answer.json() == {"detail": f"request has {received}: send the body as application/json"}
    typed = client.post("/v1/rerank", content=json.dumps(BODY), headers={"content-type": "application/vnd.x+json"})
    assert typed.status_code == 200  # any application/*+json is JSON


def test_a_gzip_body_is_decoded_under_the_size_limit(client):
    plain = client.post("/v1/rerank", json={**BODY, "raw_scores": True}).json()["results"]
    packed = gzip.compress(json.dumps({**BODY, "raw_scores": True}).encode())
    answer = client.post("/v1/rerank", content=packed, headers=_json({"content-encoding": "gzip"}))
    assert answer.status_code == 200 and answer.json()["results"] == plain
    bomb = gzip.compress(json.dumps({**BODY, "documents": ["fleas " * 10_000]}).encode())  # 60 kB in 300 bytes
    assert len(bomb) < 1000
    answer = client.post("/v1/rerank", content=bomb, headers=_json({"content-encoding": "gzip"}))
    assert answer.status_code == 413 and answer.json() == {"detail": "request body over 20000 bytes once decompressed"}
    answer = client.post("/v1/rerank", content=packed[:-12], headers=_json({"content-encoding": "gzip"}))
    assert answer.status_code == 400 and answer.json()["detail"].startswith("request body is not valid gzip")
    answer = client.post("/v1/rerank", content=packed, headers=_json({"content-encoding": "br"}))
    assert answer.status_code == 415
    assert answer.json() == {"detail": "Content-Encoding 'br' is not supported: send gzip or no encoding"}


def _json(headers: dict) -> dict:
    return {"content-type": "application/json", **headers}


def test_nesting_too_deep_to_parse_gets_400_saying_so(client):
    answer = client.post("/v1/rerank", content="[" * 9000 + "]" * 9000, headers=_json({}))
    assert answer.status_code == 400
    assert answer.json() == {"detail": "request body is not valid JSON: it is nested too deeply to parse"}
    nested = '{"query": "fleas", "documents": ' + "[" * 500 + "]" * 500 + "}"  # parses; no document is a list
    answer = client.post("/v1/rerank", content=nested, headers=_json({}))
    assert answer.status_code == 422
    assert answer.json()["detail"] == "documents.0: a document is a string or an object with a 'text' string"
    assert answer.json()["errors"][0]["input"] == "<array of length 1>"


def test_validation_errors_name_the_field_as_the_client_wrote_it_and_echo_only_an_excerpt(client):
    answer = client.post("/v1/rerank", json={"query": FLEA_QUERY, "documents": ["a", 5, {"title": "t"}]})
    assert answer.status_code == 422
    body = answer.json()
    assert body["detail"] == (
        "documents.1: a document is a string or an object with a 'text' string; documents.2.text: Field required"
    )
    assert [e["loc"] for e in body["errors"]] == [["documents", 1], ["documents", 2, "text"]]
    assert [e["input"] for e in body["errors"]] == [5, "<object of size 1>"]
    assert "function-after" not in answer.text and "TextDocument" not in answer.text
    huge = "x" * 15_000 + "\ud800"
    answer = client.post("/v2/rerank", content=json.dumps({**BODY, "documents": [huge]}), headers=_json({}))
    assert answer.status_code == 422 and len(answer.content) < 1000
    assert answer.json()["detail"].startswith("documents.0: Value error, holds a lone UTF-16 surrogate")
    assert answer.json()["errors"][0]["input"] == "x" * 80 + "..."


def test_v1_rank_fields_rank_on_the_named_fields_in_their_order(client, ranker):
    docs = [{"text": "wifi", "title": DOCS[i], "body": DOCS[4 - i], "n": i} for i in range(3)] + ["fleas live long"]
    body = {"query": FLEA_QUERY, "documents": docs, "raw_scores": True, "rank_fields": ["body", "n", "missing"]}
    answer = client.post("/v1/rerank", json=body)
    assert answer.status_code == 200, answer.text
    expected = ranker.score(FLEA_QUERY, [f"{DOCS[4 - i]}\n{i}" for i in range(3)] + [""])
    assert {r["index"]: r["relevance_score"] for r in answer.json()["results"]} == dict(enumerate(expected))
    shown = {r["index"]: r["document"] for r in answer.json()["results"]}
    assert shown[0] == {"text": "wifi", "title": DOCS[0]} and shown[3] == {"text": "fleas live long"}
    default = client.post("/v1/rerank", json={**body, "rank_fields": None}).json()["results"]
    expected = ranker.score(FLEA_QUERY, [f"{DOCS[i]}\nwifi" for i in range(3)] + ["fleas live long"])
    assert {r["index"]: r["relevance_score"] for r in default} == dict(enumerate(expected))  # title, then text
    answer = client.post("/v1/rerank", json={**body, "rank_fields": []})
    assert answer.status_code == 422 and answer.json()["detail"].startswith("rank_fields: ")


def test_tei_truncate_false_refuses_a_text_the_ranker_would_cut(client):
    texts = [DOCS[0], "fleas live up to a year on the host and their life cycle depends on it"]
    for cut in ({"truncate": True}, {}):  # cut unless told not to
        assert client.post("/rerank", json={"query": FLEA_QUERY, "texts": texts, **cut}).status_code == 200
    answer = client.post("/rerank", json={"query": FLEA_QUERY, "texts": texts, "truncate": False})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "texts.1: 28 tokens, over the passage limit (20 tokens), and truncate is false"
    assert client.post("/rerank", json={"query": FLEA_QUERY, "texts": texts[:1], "truncate": False}).status_code == 200
    left = client.post("/rerank", json={"query": FLEA_QUERY, "texts": texts, "truncation_direction": "Left"})
    assert left.status_code == 422 and left.json()["detail"].startswith("truncation_direction: ")


@pytest.mark.parametrize(
    "query", ["\u200b", "\u200c\u200d", "\ufeff \u2060", "\x00", "\x00\x01 \x7f", "\u00a0", " \t\n"]
)
@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_a_query_with_nothing_visible_is_empty(client, query, path):
    field = "texts" if path == "/rerank" else "documents"
    answer = client.post(path, json={"query": query, field: DOCS})
    assert answer.status_code == 422 and answer.json()["detail"] == "query: query is empty"


def test_a_document_with_nothing_visible_is_ranked_as_the_empty_passage(client, ranker):
    docs = ["\u200b", DOCS[2], "\x00 \ufeff", "\u00a0", ""]
    answer = client.post("/rerank", json={"query": FLEA_QUERY, "texts": docs, "raw_scores": True})
    empty, other = ranker.score(FLEA_QUERY, ["", DOCS[2]])  # the empty passage is scored once, for all four
    assert {r["index"]: r["score"] for r in answer.json()} == dict(enumerate([empty, other, empty, empty, empty]))
    assert empty != ranker.score(FLEA_QUERY, docs[:2])[0]  # what its invisible characters would have scored


def test_the_serve_edges_benchmark_reports_both_scenarios(tmp_path):
    """benchmarks/serve_edges.py end to end on the tiny model (its timings are reported, never asserted)."""
    from benchmarks.serve_edges import main

    from .tiny_data import write_data_dir

    model = save_tiny(tmp_path / "tiny")
    argv = ["--data-dir", str(write_data_dir(tmp_path / "data")), "--model", str(model), "--shutdown-grace", "1"]
    argv += ["--documents", "40", "--doc-chars", "200", "--close-after", "0.5", "--signal-after", "0"]
    results = main([*argv, "--out", str(tmp_path / "edges.md")])
    assert results["health"]["ranker"]["model"] == str(model) and results["disconnect"]["body MB"] > 0
    assert len(results["shutdown"]["answers (s after SIGTERM)"]) == 2
    assert results["shutdown"]["exit code"] == -signal.SIGTERM  # uvicorn re-raises the signal once it is done
    assert (tmp_path / "edges.md").read_text().startswith("{") and (tmp_path / "edges.server.log").is_file()
