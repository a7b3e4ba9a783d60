"""HTTP service over one HeadRanker: Cohere/Jina `POST /v1/rerank` and text-embeddings-inference `POST /rerank`.

The model is loaded once, before the app starts. A body is checked before it is parsed (JSON only, gzip
decoded, within the size limit, decoded or not). Requests are tokenized off the event loop and wait in a
bounded queue (429 when full); one worker thread owns the model and batches the prompts of up to `max_active`
requests into each forward pass under the ranker's token budget, the longest-waiting request first, so
concurrent clients share passes, a long list cannot hold back a short one, and memory stays bounded. A batch
that runs out of device memory is split and retried; a single prompt that still does is answered 503. Work
nobody waits for stops: a request whose client leaves (499) or that outlives the shutdown grace (503) is never
queued if it is still being tokenized, is dropped if queued, and its pass ends at the next layer. A request's
repeated and empty documents are scored once and its query is capped (serve_limits); ids, timings and metrics
are serve_metrics', keys serve_auth's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag
from starlette.exceptions import HTTPException as StarletteHTTPException

from headrank.engine.prompt import PromptBuilder
from headrank.evaluation.experiment import describe_ranker
from headrank.evaluation.metrics import peak_rss_mb, rss_mb
from headrank.highlights import evidence_spans
from headrank.ranker import HeadRanker
from headrank.results import VISIBLE, Document, ScoredList, best_first, is_blank, relevance_scores
from headrank.serve.auth import OPEN_PATHS as KEYLESS
from headrank.serve.auth import BearerAuth, check_key, declare_auth
from headrank.serve.limits import MAX_QUERY_TOKENS, capped_query, distinct
from headrank.serve.metrics import REQUEST_ID_HEADER, TIMING_HEADERS, RequestTracer, ServeMetrics, current, log_config
from headrank.serve.page import PAGE
from headrank.serve.scheduler import Overloaded, QueueFull, Scheduler


@dataclass(frozen=True)
class ServeConfig:
    model_name: str = "headrank"
    """the name answered in `model` (a request's own `model` field is accepted and ignored)."""
    max_documents: int = 1000
    max_body_bytes: int = 4 * 1024 * 1024
    queue_size: int = 32
    """requests waiting for the worker; one more is answered 429."""
    max_active: int = 32
    """requests whose prompts the worker batches together."""
    max_batch_requests: int = 32
    """requests whose prompts may share one forward pass (TEI's --max-batch-requests); the token budget is the
    ranker's `max_batch_tokens`."""
    shutdown_grace: float = 20.0
    """seconds in-flight requests get after SIGTERM (below orchestrators' usual 30); those still running are then
    answered 503 and the process exits."""
    max_query_tokens: int = MAX_QUERY_TOKENS
    """a longer query is cut to this many tokens (TEI's `truncate: false`: refused with 422)."""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    """with any, every route but /health, /ping, the schema (and /metrics unless `metrics_need_key`) answers 401
    without `Authorization: Bearer <one of them>`."""
    metrics_need_key: bool = False
    cors_origins: tuple[str, ...] = ()
    """origins whose browser pages may call the API ("*": any); none: no CORS headers at all."""
    warm_up: bool = True
    """run one pass over a one-passage list at start: /health answers 503 until it is done."""

    def __post_init__(self):
        for name in (
            "max_documents",
            "max_body_bytes",
            "queue_size",
            "max_active",
            "max_batch_requests",
            "max_query_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.shutdown_grace <= 3600:
            raise ValueError(f"shutdown_grace must be in (0, 3600] seconds, got {self.shutdown_grace}")
        for key in self.api_keys:
            check_key(key, "api_keys")


class StrictRequest(BaseModel):
    """No coercion (0 is not false, "3" is not 3): the server accepts exactly what its schema declares."""

    model_config = ConfigDict(strict=True)


def _unicode_text(value: str) -> str:
    """Valid JSON may carry a lone UTF-16 surrogate (JavaScript's JSON.stringify emits them): not text that a
    tokenizer, a log or a response can encode, so it is refused here with a plain message."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"holds a lone UTF-16 surrogate at character {err.start}: not valid Unicode text") from None
    return value


Text = Annotated[str, AfterValidator(_unicode_text)]


def _blank_as_empty(text: str) -> str:
    """A text with nothing visible is the empty passage: a document of only invisible characters scores as one
    with no text at all, whichever of them it held."""
    return "" if is_blank(text) else text


class TextDocument(StrictRequest):
    text: Text
    title: Text | None = None


class FieldsDocument(TextDocument):
    """A v1 document object: `text`, an optional `title`, and any other fields, which `rank_fields` may name."""

    model_config = ConfigDict(extra="allow")


Query = Annotated[
    Text,
    Field(
        min_length=1,
        pattern=VISIBLE,
        description="the query; must hold a visible character (not only whitespace, control or zero-width ones)",
    ),
]
V1Document = Annotated[
    Annotated[Text, Tag("string")] | Annotated[FieldsDocument, Tag("object")],
    Discriminator(
        lambda value: "string" if isinstance(value, str) else "object" if isinstance(value, dict) else None,
        custom_error_type="document_type",
        custom_error_message="a document is a string or an object with a 'text' string",
    ),
]


def _whole_number(value):
    """JSON Schema's integer includes 3.0: take whole floats as ints (3.5 and "3" still fail, strictly)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


PositiveInt = Annotated[int, Field(ge=1), BeforeValidator(_whole_number)]  # the bound first: the schema says it
TopN = Annotated[PositiveInt | None, Field(default=None, description="answer only the best n; all are scored")]
RawScores = Annotated[
    bool,
    Field(
        default=False,
        description="answer the raw attention scores instead of relevance in (0, 1) (the logistic of each score's "
        "distance from the list's mean in standard deviations: the ranking is kept)",
    ),
]


Relevance = Annotated[
    Literal["list", "calibrated"],
    Field(
        default="list",
        description="`list`: relevance_score is the logistic of each score's distance from the list's mean in "
        "standard deviations (relative to the list); `calibrated`: the ranker's calibrated P(relevant), "
        "comparable across queries and lists (the list-relative one when its artifact has no calibration.json: "
        "/health's ranker.calibrated says which). Both keep the ranking",
    ),
]


ReturnHighlights = Annotated[
    bool,
    Field(
        default=False,
        description="also answer each result's `highlights`: its sentences by the selected heads' attention, "
        "heaviest first, as {start, end, weight} character offsets into the text ranked (for a v1 document "
        "with a title or rank_fields: the fields joined by newlines). Costs one more pass",
    ),
]


class HighlightSpan(BaseModel):
    start: int
    end: int
    weight: float


class RerankRequest(StrictRequest):
    """Cohere v1 / Jina rerank request."""

    model: str | None = None
    query: Query
    documents: list[V1Document]
    top_n: TopN = None
    return_documents: bool = True
    raw_scores: RawScores = False
    relevance: Relevance = "list"
    return_highlights: ReturnHighlights = False
    rank_fields: list[Text] | None = Field(
        default=None,
        min_length=1,
        description="the fields of each document to rank on, their values joined by newlines in this order (a "
        "string document is its `text`; a field a document lacks is skipped; a value that is not a string is "
        "ranked as its JSON text). Default: `title` then `text`",
    )


class RerankRequestV2(StrictRequest):
    """Cohere v2 rerank request (`ClientV2.rerank`; its other fields, e.g. `priority`, are accepted and ignored)."""

    model: str | None = None
    query: Query
    documents: list[Text]
    top_n: TopN = None
    max_tokens_per_doc: PositiveInt | None = Field(default=None, description="cut each document to this many tokens")
    raw_scores: RawScores = False
    relevance: Relevance = "list"
    return_highlights: ReturnHighlights = False


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: TextDocument | None = None
    highlights: list[HighlightSpan] | None = None


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    model: str
    usage: dict[str, int]
    meta: dict


class RerankResultV2(BaseModel):
    index: int
    relevance_score: float
    highlights: list[HighlightSpan] | None = None


class RerankResponseV2(BaseModel):
    id: str
    results: list[RerankResultV2]
    model: str
    meta: dict


class TeiRequest(StrictRequest):
    """text-embeddings-inference rerank request (its other fields are accepted and ignored)."""

    query: Query
    texts: list[Text]
    return_text: bool = False
    raw_scores: RawScores = False
    relevance: Relevance = "list"
    return_highlights: ReturnHighlights = False
    truncate: bool = Field(
        default=True,
        description="false: answer 422 for a text longer than the ranker's passage limit, or a query longer than "
        "the server's query limit, instead of cutting it (TEI's own default is false; this server cuts unless told "
        "not to)",
    )
    truncation_direction: Literal["Right"] = Field(
        default="Right", description="a cut text keeps its beginning (TEI's `Left` is not supported)"
    )


class TeiResult(BaseModel):
    index: int
    score: float
    text: str | None = None
    highlights: list[HighlightSpan] | None = None


class Health(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)  # the field notes below are the OpenAPI descriptions

    status: str
    model: str
    ranker: dict
    """what is served: base model, heads, layers run, training data (None: not a trained artifact)."""
    waiting: int
    active: int
    queue_size: int
    rss_mb: float | None = None
    """resident memory of the server process now (None where /proc is not there)."""
    peak_rss_mb: float
    """the highest resident memory of the server process since it started (not now)."""
    device_memory_mb: float | None = None
    """memory the model's accelerator holds now (None on a CPU)."""
    peak_device_memory_mb: float | None = None


NOT_READY = "not ready: the model is warming up (its first pass), or the server is shutting down"


class Ping(BaseModel):
    status: Literal["ok"] = "ok"


class ModelCard(BaseModel):
    """One served model, in OpenAI's `/v1/models` shape, with what headrank serves of it."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "headrank"
    ranker: dict
    artifact: dict | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    """Every error but validation: bad JSON (400), a body too large (413), not JSON or not gzip (415), busy
    (429), client gone (499), out of memory or shutting down (503)."""

    detail: str


class ValidationErrorBody(BaseModel):
    """422: one readable line per problem in `detail`; in `errors`, each problem's type, location and message
    and an excerpt of the value that failed."""

    detail: str
    errors: list[dict] = Field(default_factory=list)


ERRORS = {
    400: {"model": ErrorBody, "description": "the body is not JSON (or nested too deeply, or not valid gzip)"},
    413: {"model": ErrorBody, "description": "the body is over the size limit (decoded, for a gzip body)"},
    415: {"model": ErrorBody, "description": "the body is not sent as application/json, or in an encoding but gzip"},
    422: {"model": ValidationErrorBody, "description": "the request does not validate"},
    429: {"model": ErrorBody, "description": "the queue is full; retry after the Retry-After header's seconds"},
    503: {
        "model": ErrorBody,
        "description": "out of device memory, or shutting down; retry after the Retry-After header's seconds",
    },
}


class BodyGuard:
    """ASGI middleware that checks a request body before anything parses it: no body is over `limit` bytes,
    declared, streamed or once decompressed (413), so that a gzip bomb stops at the limit; and a POST to one of
    `json_paths` must be sent as JSON (415 otherwise) in gzip or no encoding (415 for another). Other requests
    are left to the router (POST /health is its 405)."""

    def __init__(self, app, limit: int, json_paths: frozenset[str]):
        self.app = app
        self.limit = limit
        self.json_paths = json_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        takes_json = scope["method"] == "POST" and scope["path"] in self.json_paths
        refusal = _refused_headers(headers, self.limit, takes_json)
        if refusal is not None:
            return await refusal(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await _error(413, f"request body over {self.limit} bytes")(scope, receive, send)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if takes_json and headers.get("content-encoding", "").strip().lower() in GZIP:
            try:
                body = _gunzip(body, self.limit)
            except ValueError as err:
                return await _error(400, f"request body is not valid gzip: {err}")(scope, receive, send)
            if body is None:
                return await _error(413, f"request body over {self.limit} bytes once decompressed")(
                    scope, receive, send
                )
            kept = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"content-encoding", b"content-length")]
            scope = dict(scope, headers=[*kept, (b"content-length", str(len(body)).encode())])
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


GZIP = ("gzip", "x-gzip")


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _refused_headers(headers: Mapping[str, str], limit: int, takes_json: bool) -> JSONResponse | None:
    """The answer to a request whose headers alone rule it out, before its body is read; None if none does."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return _error(413, f"request body over {limit} bytes")
    if not takes_json:
        return None
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", *GZIP):
        return _error(415, f"Content-Encoding {_excerpt(encoding)!r} is not supported: send gzip or no encoding")
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (media == "application/json" or media.startswith("application/") and media.endswith("+json")):
        received = f"Content-Type {_excerpt(headers['content-type'])!r}" if media else "no Content-Type"
        return _error(415, f"request has {received}: send the body as application/json")
    return None


def _gunzip(body: bytes, limit: int) -> bytes | None:
    """A gzip body decompressed, or None once it inflates past `limit` bytes (decompression stops there);
    ValueError if it is not one complete gzip stream."""
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        decoded = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise ValueError(str(err)) from None
    if len(decoded) > limit:
        return None
    if not inflater.eof or inflater.unused_data:
        raise ValueError("not one complete gzip stream")
    return decoded


FIELDS = frozenset(
    name for request in (TextDocument, RerankRequest, RerankRequestV2, TeiRequest) for name in request.model_fields
)
"""every field a request can have: a location's other parts are pydantic's names for union members."""


def _where(loc: Sequence) -> list:
    """A location as the client wrote it: list indices and field names, without "body" and union member tags
    (`function-after[_unicode_text(), str]`)."""
    return [p for p in loc if isinstance(p, int) or p in FIELDS]


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 422 with one readable line per problem otherwise."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _error(400, "request body is not valid JSON")
    lines, shown = [], []
    for e in errors:
        loc = _where(e.get("loc", ()))
        where = ".".join(map(str, loc))
        message = e.get("msg")
        if where == "query" and e.get("type") in ("string_too_short", "too_short", "string_pattern_mismatch"):
            message = "query is empty"  # the schema's minLength/pattern, said plainly
        lines.append(f"{where}: {message}" if where else str(message))
        shown.append({"type": e.get("type"), "loc": loc, "msg": _encodable(message), "input": _excerpt(e.get("input"))})
        if e.get("ctx"):
            shown[-1]["ctx"] = {str(k): _excerpt(v) for k, v in e["ctx"].items()}
    return JSONResponse({"detail": _encodable("; ".join(dict.fromkeys(lines))), "errors": shown}, 422)


PARSE_FAILURES = {RecursionError: "is nested too deeply to parse", UnicodeDecodeError: "is not UTF-8 text"}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own 400 for a body it cannot decode at all says what is wrong (not UTF-8, nested too deeply);
    every other error keeps its status, detail and headers."""
    detail = exc.detail
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        why = next((v for k, v in PARSE_FAILURES.items() if isinstance(exc.__cause__, k)), "could not be parsed")
        detail = f"request body is not valid JSON: it {why}"
    return JSONResponse({"detail": _encodable(detail)}, status_code=exc.status_code, headers=exc.headers)


EXCERPT = 80
"""characters of a client's string that an error may echo."""


def _excerpt(value):
    """What an error may echo of a value the client sent: a number, boolean or null as it is, a string cut to
    EXCERPT characters, a list or object only as its size (it may be large, or nested past any recursion
    limit). Always encodable: a lone surrogate is shown escaped (\\ud800), a non-finite number by name."""
    if isinstance(value, str):
        return _encodable(value if len(value) <= EXCERPT else value[:EXCERPT] + "...")
    if isinstance(value, list | tuple):
        return f"<array of length {len(value)}>"
    if isinstance(value, dict):
        return f"<object of size {len(value)}>"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, bool | int | float):
        return _encodable(value)
    return _excerpt(str(value))


def _encodable(value):
    """A scalar an error body echoes, made encodable: a lone surrogate is shown escaped (\\ud800), a
    non-finite number as its name ("inf", "nan")."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


POLL_S = 0.25
ACCESS_LOG = logging.getLogger("uvicorn.access")


def _log_gone(request: Request) -> None:
    """uvicorn writes no access line for a response whose client is gone: this is that line, in its format."""
    client = request.scope.get("client")
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    version = request.scope.get("http_version", "1.1")
    ACCESS_LOG.info(
        '%s - "%s %s HTTP/%s" %d', f"{client[0]}:{client[1]}" if client else "-", request.method, path, version, 499
    )


SHUTTING_DOWN = "the server is shutting down; retry"
STOP_S = 3.0
"""seconds the shutdown waits for the worker to leave the layer it is in (one layer of the embedded model over a
full 8k-token window: up to ~5 s on 2 CPU cores in float32, milliseconds on a GPU); the process then exits without
it, which loses nothing (the worker only reads)."""


async def _watched(work: asyncio.Future, request: Request, job: Future):
    """`work`'s result. If the client goes away first (499), the shutdown grace runs out (503) or the handler is
    cancelled (uvicorn's own shutdown timeout), `job` is cancelled so that its work stops: a list still being
    tokenized is never queued, a queued one is dropped, and a pass that serves only it ends at its next layer."""
    try:
        while not (await asyncio.wait({work}, timeout=POLL_S))[0]:
            if await request.is_disconnected():
                _log_gone(request)
                raise HTTPException(499, "client closed the request")
            deadline = getattr(request.app.state, "shutdown_deadline", None)
            if deadline is not None and time.monotonic() >= deadline:
                raise HTTPException(503, SHUTTING_DOWN, headers={"Retry-After": "1"})
    finally:
        if not work.done():
            job.cancel()
            work.add_done_callback(_retrieved)
    if work.cancelled():  # the worker stopped before serving it
        raise HTTPException(503, SHUTTING_DOWN, headers={"Retry-After": "1"})
    return work.result()


def _retrieved(work: asyncio.Future) -> None:
    """Take the outcome of work nobody awaits any more, so that asyncio does not log it as never retrieved."""
    if not work.cancelled():
        work.exception()


def create_app(ranker: HeadRanker, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app over a loaded ranker; its worker thread runs while the app is served."""
    config = config or ServeConfig()
    scheduler = Scheduler(ranker, config.queue_size, config.max_active, config.max_batch_requests)
    metrics = ServeMetrics(scheduler)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        _warm_up(app, scheduler, config.warm_up)
        yield
        app.state.stopping = True
        scheduler.stop(STOP_S)

    app = FastAPI(
        title="headrank",
        summary="Decoding-free passage reranking from the attention heads of a causal LLM",
        lifespan=lifespan,
    )
    app.state.scheduler, app.state.metrics, app.state.warm, app.state.stopping = scheduler, metrics, False, False
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    def submit(query: str, documents: Sequence[Document], job: Future, prepare: Callable | None, truncate: bool):
        """Off the event loop: `prepare` the documents (cut or check them), cap the query, then tokenize and queue
        the list's distinct passages; answers the index of each document's passage among them."""
        trace = current()
        documents = prepare(documents) if prepare else documents
        query, warning = capped_query(ranker.builder.tokenizer, query, config.max_query_tokens, truncate)
        trace.warnings += [warning] if warning else []
        passages, where = distinct([_visible(d) for d in documents])
        trace.passages = len(passages)
        scheduler.submit(query, passages, job, trace.clock)
        return where

    async def ranked(
        request: Request,
        query: str,
        documents: Sequence[Document],
        top_n: int | None,
        raw: bool,
        prepare: Callable[[Sequence[Document]], Sequence[Document]] | None = None,
        truncate: bool = True,
        relevance: str = "list",
    ) -> list[tuple[int, float]]:
        """(index, score) best first: the one path behind every endpoint shape. A repeated document gets its
        twin's score, every empty one the empty passage's."""
        if len(documents) > config.max_documents:
            raise HTTPException(422, f"at most {config.max_documents} documents per request, got {len(documents)}")
        current().documents = len(documents)
        if not documents:
            return []
        job: Future = Future()
        try:
            where = await _watched(
                asyncio.ensure_future(asyncio.to_thread(submit, query, documents, job, prepare, truncate)),
                request,
                job,
            )
            scores = await _watched(asyncio.wrap_future(job), request, job)
        except QueueFull as err:
            raise HTTPException(429, f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from err
        except (TypeError, ValueError) as err:  # e.g. a passage longer than the model takes
            raise HTTPException(422, str(err)) from err
        except Overloaded as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from err
        calibrated = None if scores.relevance is None else [scores.relevance[i] for i in where]
        values = ScoredList([scores[i] for i in where], calibrated)
        shown = _shown(values, raw, relevance)
        return [(i, shown[i]) for i in best_first(values, top_n)]

    async def highlighted(
        wanted: bool,
        query: str,
        documents: Sequence[Document],
        order: list[tuple[int, float]],
        prepare: Callable[[Sequence[Document]], Sequence[Document]] | None = None,
    ) -> dict[int, list[HighlightSpan] | None]:
        """Each answered document's evidence spans when the request asked for them (another pass, off the loop;
        the engine's state is per thread), else None for every one (left out of the answer). `prepare` cuts the
        documents as `ranked` did."""
        if not wanted or not order:
            return dict.fromkeys(range(len(documents)))

        def spans_of() -> list:
            shown = prepare(documents) if prepare else documents
            return evidence_spans(ranker, query, [_visible(d) for d in shown])

        spans = await asyncio.to_thread(spans_of)
        return {i: [HighlightSpan(start=h.start, end=h.end, weight=h.weight) for h in spans[i]] for i, _ in order}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        """A page to rank pasted passages and see their evidence (headrank/serve/page.py)."""
        return PAGE

    _operations_routes(app, ranker, config)

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=ERRORS)
    async def rerank(request: Request, body: RerankRequest) -> RerankResponse:
        """Cohere v1 and Jina shape."""
        docs = [
            TextDocument(text=d) if isinstance(d, str) else TextDocument(text=d.text, title=d.title)
            for d in body.documents
        ]
        passages = [_v1_passage(d, body.rank_fields, i) for i, d in enumerate(body.documents)]
        order = await ranked(request, body.query, passages, body.top_n, body.raw_scores, relevance=body.relevance)
        spans = await highlighted(body.return_highlights, body.query, passages, order)
        results = [
            RerankResult(
                index=i, relevance_score=v, document=docs[i] if body.return_documents else None, highlights=spans[i]
            )
            for i, v in order
        ]
        return RerankResponse(
            id=current().request_id,
            results=results,
            model=config.model_name,
            usage={"documents": len(docs)},
            meta=_meta("1"),
        )

    @app.post("/v2/rerank", response_model=RerankResponseV2, response_model_exclude_none=True, responses=ERRORS)
    async def rerank_v2(request: Request, body: RerankRequestV2) -> RerankResponseV2:
        """Cohere v2 shape (`cohere.ClientV2`, LangChain's CohereRerank)."""
        limit = body.max_tokens_per_doc
        cut = None if limit is None else lambda documents: _cut_tokens(ranker, documents, limit)
        order = await ranked(
            request, body.query, body.documents, body.top_n, body.raw_scores, cut, relevance=body.relevance
        )
        spans = await highlighted(body.return_highlights, body.query, body.documents, order, cut)
        return RerankResponseV2(
            id=current().request_id,
            results=[RerankResultV2(index=i, relevance_score=v, highlights=spans[i]) for i, v in order],
            model=config.model_name,
            meta=_meta("2"),
        )

    @app.post("/rerank", response_model=list[TeiResult], response_model_exclude_none=True, responses=ERRORS)
    async def rerank_tei(request: Request, body: TeiRequest) -> list[TeiResult]:
        """text-embeddings-inference shape."""
        check = None if body.truncate else lambda texts: _refuse_cut(ranker, texts)
        order = await ranked(
            request, body.query, body.texts, None, body.raw_scores, check, body.truncate, body.relevance
        )
        spans = await highlighted(body.return_highlights, body.query, body.texts, order)
        return [
            TeiResult(index=i, score=v, text=body.texts[i] if body.return_text else None, highlights=spans[i])
            for i, v in order
        ]

    _middleware(app, config, metrics)
    return app


def _meta(version: str) -> dict:
    """Cohere's `meta`, with its `warnings` when the query was cut."""
    warnings = current().warnings
    return {
        "api_version": {"version": version},
        "billed_units": {"search_units": 1},
        **({"warnings": warnings} if warnings else {}),
    }


def _warm_up(app: FastAPI, scheduler: Scheduler, run: bool) -> None:
    """One pass over a one-passage list before /health says ready (the first pass pays for lazy initialisation:
    kernels, allocator, caches); without `run`, ready at once."""
    if not run:
        app.state.warm = True
        return

    def done(future: Future) -> None:
        if not future.cancelled() and future.exception() is None:
            app.state.warm = True
        elif not future.cancelled():
            logging.getLogger(__name__).error("the warm-up pass failed: %s", future.exception())

    scheduler.submit("warm-up", ["warm-up"]).add_done_callback(done)


def ready(app: FastAPI) -> bool:
    """Warm and not shutting down: what /health and the `headrank_ready` gauge say."""
    return app.state.warm and not app.state.stopping and getattr(app.state, "shutdown_deadline", None) is None


def _operations_routes(app: FastAPI, ranker: HeadRanker, config: ServeConfig) -> None:
    """/health (readiness), /ping (liveness), /models and /v1/models, /metrics."""
    scheduler, metrics = app.state.scheduler, app.state.metrics
    description = {**describe_ranker(ranker), "calibrated": getattr(ranker, "calibration", None) is not None}
    metrics.ready.set_function(lambda: float(ready(app)))
    card = ModelCard(id=config.model_name, created=int(time.time()), ranker=description, artifact=_artifact(ranker))

    @app.get("/health", response_model=Health, responses={503: {"model": Health, "description": NOT_READY}})
    def health():
        """Readiness: 200 once the model is loaded and warm, 503 before that and while shutting down."""
        state = "ok" if ready(app) else "shutting down" if app.state.warm else "warming up"
        answer = Health(
            status=state,
            model=config.model_name,
            ranker=description,
            waiting=scheduler.waiting.qsize(),
            active=len(scheduler.active),
            queue_size=config.queue_size,
            rss_mb=rss_mb(),
            peak_rss_mb=round(peak_rss_mb(), 1),
            **_device_memory(ranker),
        )
        return answer if state == "ok" else JSONResponse(answer.model_dump(), 503, headers={"Retry-After": "1"})

    @app.get("/ping", response_model=Ping)
    def ping() -> Ping:
        """Liveness: the process answers HTTP (it never waits on the model's worker)."""
        return Ping()

    @app.get("/models", response_model=ModelList)
    @app.get("/v1/models", response_model=ModelList)
    def models() -> ModelList:
        """The served model (OpenAI's list shape), its heads and the artifact it was loaded from."""
        return ModelList(data=[card])

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        body, media_type = metrics.exposition()
        return Response(body, media_type=media_type)


def _artifact(ranker) -> dict | None:
    manifest = getattr(ranker, "artifact", None)
    return None if manifest is None else {k: manifest.get(k) for k in ("base_model", "adapters", "created")}


def _keyless(config: ServeConfig) -> frozenset[str]:
    """The paths answered without a key: the probes and the schema, and /metrics unless it needs one."""
    return KEYLESS if config.metrics_need_key else KEYLESS | {"/metrics"}


def _middleware(app: FastAPI, config: ServeConfig, metrics: ServeMetrics) -> None:
    """From the outside in: CORS (a browser's preflight needs no key), the request tracer (ids, timing headers,
    metrics and the log line, for every answer, a 401 too), the key check, the body guard."""
    posted = frozenset(route.path for route in app.routes if "POST" in getattr(route, "methods", ()))
    app.add_middleware(BodyGuard, limit=config.max_body_bytes, json_paths=posted)
    if config.api_keys:
        app.add_middleware(BearerAuth, keys=config.api_keys, open_paths=_keyless(config))
    app.add_middleware(RequestTracer, metrics=metrics, routes=[r.path for r in app.routes])
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Request-Id"],
            expose_headers=[REQUEST_ID_HEADER, *TIMING_HEADERS, "Retry-After"],
            max_age=600,
        )
    _declare_limits(app, config)


def _shown(values: Sequence[float], raw: bool, relevance: str) -> list[float]:
    """What a client reads as relevance: the raw scores, the calibrated relevance the ranker settled the list
    with (a ScoredList's), or the list-relative one."""
    if raw:
        return list(values)
    calibrated = values.relevance if relevance == "calibrated" else None
    return calibrated if calibrated is not None else relevance_scores(values)


def _device_memory(ranker) -> dict:
    family = getattr(ranker, "family", None)
    if family is None or family.device.type != "cuda":
        return {}
    return {
        "device_memory_mb": round(torch.cuda.memory_allocated(family.device) / 2**20, 1),
        "peak_device_memory_mb": round(torch.cuda.max_memory_allocated(family.device) / 2**20, 1),
    }


def _cut_tokens(ranker, documents: list[str], limit: int) -> list[str]:
    """Each document cut to its first `limit` tokens of the served model's tokenizer (Cohere's
    `max_tokens_per_doc`)."""
    tokenizer = ranker.builder.tokenizer
    encoded = tokenizer(documents, add_special_tokens=False)["input_ids"]
    return [text if len(ids) <= limit else tokenizer.decode(ids[:limit]) for text, ids in zip(documents, encoded)]


def _visible(document: Document) -> Document:
    """A document whose text or title has nothing visible has it empty (see INVISIBLE): one rule for all."""
    if isinstance(document, str):
        return _blank_as_empty(document)
    title = _blank_as_empty(document.get("title") or "")
    return {"text": _blank_as_empty(document["text"]), **({"title": title} if title else {})}


def _v1_passage(document: str | FieldsDocument, fields: Sequence[str] | None, index: int) -> Document:
    """What the ranker reads of a v1 document: its text and title, or the values of `fields` in that order, joined
    by newlines as a title and a text are (Cohere's `rank_fields`)."""
    if isinstance(document, str):
        values = {"text": document}
    else:
        values = {**(document.model_extra or {}), "text": document.text, "title": document.title}
    if fields is None:
        return {k: v for k, v in values.items() if k in ("text", "title") and v is not None}
    try:
        parts = [v if isinstance(v, str) else json.dumps(v) for name in fields if (v := values.get(name)) is not None]
        return _unicode_text("\n".join(p for p in map(_blank_as_empty, parts) if p))
    except RecursionError:
        raise HTTPException(422, f"documents.{index}: a rank field is nested too deeply") from None
    except ValueError as err:
        raise HTTPException(422, f"documents.{index}: {err}") from None


def _refuse_cut(ranker, texts: Sequence[str]) -> Sequence[str]:
    """TEI's `truncate: false`: the texts as they are, or 422 naming the first one the ranker would cut."""
    builder = ranker.builder
    template = builder.template
    whole = PromptBuilder(builder.tokenizer, replace(template, max_passage_tokens=None, max_passage_words=None))
    for i, (full, cut) in enumerate(zip(whole.encode_passages(texts), builder.encode_passages(texts))):
        if len(full) != len(cut):
            limits = ((template.max_passage_words, "words"), (template.max_passage_tokens, "tokens"))
            limit = " and ".join(f"{n} {unit}" for n, unit in limits if n is not None)
            raise HTTPException(
                422, f"texts.{i}: {len(full)} tokens, over the passage limit ({limit}), and truncate is false"
            )
    return texts


def _declare_limits(app: FastAPI, config: ServeConfig) -> None:
    """Put the limits this server enforces into its OpenAPI schema, so that generated clients and validators
    agree with it: documents per request and the body size."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for name, field_name in (
                ("RerankRequest", "documents"),
                ("RerankRequestV2", "documents"),
                ("TeiRequest", "texts"),
            ):
                schema["components"]["schemas"][name]["properties"][field_name]["maxItems"] = config.max_documents
            schema["info"]["description"] = f"Request bodies are limited to {config.max_body_bytes} bytes (413 above)."
            if config.api_keys:
                declare_auth(schema, _keyless(config))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def http_server(app: FastAPI, grace: float, **options):
    """A uvicorn server whose SIGTERM/SIGINT starts the shutdown grace: requests still running when it ends are
    answered 503 (uvicorn waits a little longer, so those answers leave), then the process exits."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if getattr(app.state, "shutdown_deadline", None) is None:
                app.state.shutdown_deadline = time.monotonic() + max(grace - 2 * POLL_S, 0.0)
            super().handle_exit(sig, frame)

    return Server(uvicorn.Config(app, timeout_graceful_shutdown=max(1, math.ceil(grace)), **options))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is refused in a second, not after it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as err:
        message = f"cannot listen on {host}:{port}: {err.strerror or err} (another server on that port? --port)"
        raise OSError(message) from None


def serve(
    ranker: HeadRanker,
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, on `sock` when one was bound already (see `bind`), else on host:port."""
    config = config or ServeConfig()
    app = create_app(ranker, config)
    server = http_server(app, config.shutdown_grace, host=host, port=port, log_config=log_config())
    if sock is not None:  # uvicorn says where it listens only for sockets it binds itself: say it the same way
        bound = sock.getsockname()
        address = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", address, bound[1]
        )
    server.run(sockets=[sock] if sock is not None else None)
