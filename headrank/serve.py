"""HTTP service over one HeadRanker: Cohere/Jina `POST /v1/rerank` and text-embeddings-inference `POST /rerank`.

The model is loaded once, before the app starts. Requests are tokenized off the event loop and wait in a
bounded queue (429 when full); one worker thread owns the model and batches the prompts of up to `max_active`
requests into each forward pass under the ranker's token budget, the longest-waiting request first, so
concurrent clients share passes, a long list cannot hold back a short one, and memory stays bounded. A batch
that runs out of device memory is split and retried; a single prompt that still does is answered 503."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Annotated

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from headrank.evaluate import peak_rss_mb, rss_mb
from headrank.experiment import describe_ranker
from headrank.ranker import HeadRanker
from headrank.results import Document, best_first, relevance_scores
from headrank.scheduler import Overloaded, QueueFull, Scheduler


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

    def __post_init__(self):
        for name in ("max_documents", "max_body_bytes", "queue_size", "max_active", "max_batch_requests"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.shutdown_grace <= 3600:
            raise ValueError(f"shutdown_grace must be in (0, 3600] seconds, got {self.shutdown_grace}")


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


class TextDocument(StrictRequest):
    text: Text
    title: Text | None = None


Query = Annotated[Text, Field(min_length=1, pattern=r"\S", description="the query; must hold a non-space character")]


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


class RerankRequest(StrictRequest):
    """Cohere v1 / Jina rerank request."""

    model: str | None = None
    query: Query
    documents: list[Text | TextDocument]
    top_n: TopN = None
    return_documents: bool = True
    raw_scores: RawScores = False


class RerankRequestV2(StrictRequest):
    """Cohere v2 rerank request (`ClientV2.rerank`; its other fields, e.g. `priority`, are accepted and ignored)."""

    model: str | None = None
    query: Query
    documents: list[Text]
    top_n: TopN = None
    max_tokens_per_doc: PositiveInt | None = Field(default=None, description="cut each document to this many tokens")
    raw_scores: RawScores = False


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: TextDocument | None = None


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    model: str
    usage: dict[str, int]
    meta: dict


class RerankResultV2(BaseModel):
    index: int
    relevance_score: float


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


class TeiResult(BaseModel):
    index: int
    score: float
    text: str | None = None


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


class ErrorBody(BaseModel):
    """Every error but validation: bad JSON (400), a body too large (413), busy (429), client gone (499)."""

    detail: str


class ValidationErrorBody(BaseModel):
    """422: one readable line per problem in `detail`, pydantic's error objects in `errors`."""

    detail: str
    errors: list[dict] = Field(default_factory=list)


ERRORS = {
    400: {"model": ErrorBody, "description": "the body is not JSON"},
    413: {"model": ErrorBody, "description": "the body is over the size limit"},
    422: {"model": ValidationErrorBody, "description": "the request does not validate"},
    429: {"model": ErrorBody, "description": "the queue is full; retry after the Retry-After header's seconds"},
    503: {
        "model": ErrorBody,
        "description": "out of device memory, or shutting down; retry after the Retry-After header's seconds",
    },
}


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit` bytes with 413, declared or streamed."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        response = JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)
        await response(scope, receive, send)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 422 with one readable line per problem otherwise."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse({"detail": "request body is not valid JSON"}, status_code=400)
    lines = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        message = e.get("msg")
        if where == "query" and e.get("type") in ("string_too_short", "too_short", "string_pattern_mismatch"):
            message = "query is empty"  # the schema's minLength/pattern, said plainly
        lines.append(f"{where}: {message}" if where else str(message))
    return JSONResponse({"detail": _encodable("; ".join(lines)), "errors": _encodable(errors)}, 422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own 400 for a body it cannot decode at all (invalid UTF-8, absurd nesting) says what the
    documented one says; every other error keeps its status, detail and headers."""
    detail = exc.detail
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = "request body is not valid JSON (UTF-8)"
    return JSONResponse({"detail": _encodable(detail)}, status_code=exc.status_code, headers=exc.headers)


def _encodable(value):
    """What an error body echoes, made encodable whatever the client sent: a lone surrogate is shown escaped
    (\\ud800), a non-finite number as its name ("inf", "nan"), anything else not JSON as its text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {_encodable(str(k)): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _encodable(str(value))


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


async def _result(future: Future, request: Request) -> list[float]:
    """The scores; if the client goes away first, or the shutdown grace runs out, cancel the job so that the
    worker drops its remaining passes."""
    waiting = asyncio.wrap_future(future)
    while not (await asyncio.wait({waiting}, timeout=POLL_S))[0]:
        if await request.is_disconnected():
            future.cancel()
            _log_gone(request)
            raise HTTPException(499, "client closed the request")
        deadline = getattr(request.app.state, "shutdown_deadline", None)
        if deadline is not None and time.monotonic() >= deadline:
            future.cancel()
            raise HTTPException(503, "the server is shutting down; retry", headers={"Retry-After": "1"})
    return waiting.result()


def create_app(ranker: HeadRanker, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app over a loaded ranker; its worker thread runs while the app is served."""
    config = config or ServeConfig()
    scheduler = Scheduler(ranker, config.queue_size, config.max_active, config.max_batch_requests)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        yield
        scheduler.stop()

    app = FastAPI(
        title="headrank",
        summary="Decoding-free passage reranking from the attention heads of a causal LLM",
        lifespan=lifespan,
    )
    app.state.scheduler = scheduler
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    async def ranked(
        request: Request, query: str, documents: Sequence[Document], top_n: int | None, raw: bool
    ) -> list[tuple[int, float]]:
        """(index, score) best first: the one path behind every endpoint shape."""
        if len(documents) > config.max_documents:
            raise HTTPException(422, f"at most {config.max_documents} documents per request, got {len(documents)}")
        if not documents:
            return []
        try:
            future = await asyncio.to_thread(scheduler.submit, query, documents)
        except QueueFull as err:
            raise HTTPException(429, f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from err
        except (TypeError, ValueError) as err:
            raise HTTPException(422, str(err)) from err
        try:
            values = await _result(future, request)
        except (TypeError, ValueError) as err:  # e.g. a passage longer than the model takes
            raise HTTPException(422, str(err)) from err
        except Overloaded as err:
            raise HTTPException(503, str(err), headers={"Retry-After": "1"}) from err
        shown = values if raw else relevance_scores(values)
        return [(i, shown[i]) for i in best_first(values, top_n)]

    description = describe_ranker(ranker)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(
            status="ok",
            model=config.model_name,
            ranker=description,
            waiting=scheduler.waiting.qsize(),
            active=len(scheduler.active),
            queue_size=config.queue_size,
            rss_mb=rss_mb(),
            peak_rss_mb=round(peak_rss_mb(), 1),
            **_device_memory(ranker),
        )

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=ERRORS)
    async def rerank(request: Request, body: RerankRequest) -> RerankResponse:
        """Cohere v1 and Jina shape."""
        docs = [TextDocument(text=d) if isinstance(d, str) else d for d in body.documents]
        order = await ranked(
            request, body.query, [d.model_dump(exclude_none=True) for d in docs], body.top_n, body.raw_scores
        )
        results = [
            RerankResult(index=i, relevance_score=v, document=docs[i] if body.return_documents else None)
            for i, v in order
        ]
        return RerankResponse(
            id=str(uuid.uuid4()),
            results=results,
            model=config.model_name,
            usage={"documents": len(docs)},
            meta={"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
        )

    @app.post("/v2/rerank", response_model=RerankResponseV2, responses=ERRORS)
    async def rerank_v2(request: Request, body: RerankRequestV2) -> RerankResponseV2:
        """Cohere v2 shape (`cohere.ClientV2`, LangChain's CohereRerank)."""
        documents = body.documents
        if body.max_tokens_per_doc is not None and documents:
            documents = await asyncio.to_thread(_cut_tokens, ranker, documents, body.max_tokens_per_doc)
        order = await ranked(request, body.query, documents, body.top_n, body.raw_scores)
        return RerankResponseV2(
            id=str(uuid.uuid4()),
            results=[RerankResultV2(index=i, relevance_score=v) for i, v in order],
            model=config.model_name,
            meta={"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        )

    @app.post("/rerank", response_model=list[TeiResult], response_model_exclude_none=True, responses=ERRORS)
    async def rerank_tei(request: Request, body: TeiRequest) -> list[TeiResult]:
        """text-embeddings-inference shape."""
        order = await ranked(request, body.query, body.texts, None, body.raw_scores)
        return [TeiResult(index=i, score=v, text=body.texts[i] if body.return_text else None) for i, v in order]

    _declare_limits(app, config)
    return app


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


def serve(ranker: HeadRanker, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None) -> None:
    config = config or ServeConfig()
    http_server(create_app(ranker, config), config.shutdown_grace, host=host, port=port).run()
