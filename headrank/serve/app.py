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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from headrank.evaluation.experiment import describe_ranker
from headrank.evaluation.metrics import peak_rss_mb, rss_mb
from headrank.ranker import HeadRanker
from headrank.results import Document, ScoredList, best_first, relevance_scores
from headrank.serve.auth import OPEN_PATHS as KEYLESS
from headrank.serve.auth import BearerAuth, declare_auth
from headrank.serve.config import ServeConfig
from headrank.serve.errors import http_error, validation_error
from headrank.serve.guard import BodyGuard
from headrank.serve.limits import capped_query, distinct
from headrank.serve.metrics import REQUEST_ID_HEADER, TIMING_HEADERS, RequestTracer, ServeMetrics, current
from headrank.serve.page import PAGE
from headrank.serve.scheduler import Overloaded, QueueFull, Scheduler
from headrank.serve.schemas import (
    ERRORS,
    NOT_READY,
    FieldsDocument,
    Health,
    HighlightSpan,
    ModelCard,
    ModelList,
    Ping,
    RerankRequest,
    RerankRequestV2,
    RerankResponse,
    RerankResponseV2,
    RerankResult,
    RerankResultV2,
    TeiRequest,
    TeiResult,
    TextDocument,
    blank_as_empty,
    unicode_text,
)

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
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        """A page to rank pasted passages and see their evidence (headrank/serve/page.py)."""
        return PAGE

    _operations_routes(app, ranker, config)
    _rerank_routes(app, Reranking(ranker, scheduler, config))
    _middleware(app, config, metrics)
    return app


@dataclass
class Reranking:
    """The one path behind every rerank shape: documents in, (index, relevance) best first out, with the
    evidence spans when asked."""

    ranker: HeadRanker
    scheduler: Scheduler
    config: ServeConfig

    def submit(self, query: str, documents: Sequence[Document], job: Future, prepare: Callable | None, truncate: bool):
        """Off the event loop: `prepare` the documents (cut or check them), cap the query, then tokenize and queue
        the list's distinct passages; answers the index of each document's passage among them."""
        trace = current()
        documents = prepare(documents) if prepare else documents
        query, warning = capped_query(self.ranker, query, self.config.max_query_tokens, truncate)
        trace.warnings += [warning] if warning else []
        passages, where = distinct([_visible(d) for d in documents])
        trace.passages = len(passages)
        self.scheduler.submit(query, passages, job, trace.clock)
        return where

    async def ranked(
        self,
        request: Request,
        query: str,
        documents: Sequence[Document],
        top_n: int | None,
        raw: bool,
        prepare: Callable[[Sequence[Document]], Sequence[Document]] | None = None,
        truncate: bool = True,
        relevance: str = "list",
    ) -> list[tuple[int, float]]:
        """(index, score) best first. A repeated document gets its twin's score, every empty one the empty
        passage's."""
        if len(documents) > self.config.max_documents:
            raise HTTPException(422, f"at most {self.config.max_documents} documents per request, got {len(documents)}")
        current().documents = len(documents)
        if not documents:
            return []
        job: Future = Future()
        try:
            where = await _watched(
                asyncio.ensure_future(asyncio.to_thread(self.submit, query, documents, job, prepare, truncate)),
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
        self,
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
            return self.ranker.evidence_spans(query, [_visible(d) for d in shown])

        spans = await asyncio.to_thread(spans_of)
        return {i: [HighlightSpan(start=h.start, end=h.end, weight=h.weight) for h in spans[i]] for i, _ in order}


def _rerank_routes(app: FastAPI, service: Reranking) -> None:
    """Cohere v1 and Jina (/v1/rerank), Cohere v2 (/v2/rerank), text-embeddings-inference (/rerank)."""
    ranker, name = service.ranker, service.config.model_name

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=ERRORS)
    async def rerank(request: Request, body: RerankRequest) -> RerankResponse:
        """Cohere v1 and Jina shape."""
        docs = [
            TextDocument(text=d) if isinstance(d, str) else TextDocument(text=d.text, title=d.title)
            for d in body.documents
        ]
        passages = [_v1_passage(d, body.rank_fields, i) for i, d in enumerate(body.documents)]
        order = await service.ranked(
            request, body.query, passages, body.top_n, body.raw_scores, relevance=body.relevance
        )
        spans = await service.highlighted(body.return_highlights, body.query, passages, order)
        results = [
            RerankResult(
                index=i, relevance_score=v, document=docs[i] if body.return_documents else None, highlights=spans[i]
            )
            for i, v in order
        ]
        return RerankResponse(
            id=current().request_id, results=results, model=name, usage={"documents": len(docs)}, meta=_meta("1")
        )

    @app.post("/v2/rerank", response_model=RerankResponseV2, response_model_exclude_none=True, responses=ERRORS)
    async def rerank_v2(request: Request, body: RerankRequestV2) -> RerankResponseV2:
        """Cohere v2 shape (`cohere.ClientV2`, LangChain's CohereRerank)."""
        limit = body.max_tokens_per_doc
        cut = None if limit is None else lambda documents: _cut_tokens(ranker, documents, limit)
        order = await service.ranked(
            request, body.query, body.documents, body.top_n, body.raw_scores, cut, relevance=body.relevance
        )
        spans = await service.highlighted(body.return_highlights, body.query, body.documents, order, cut)
        return RerankResponseV2(
            id=current().request_id,
            results=[RerankResultV2(index=i, relevance_score=v, highlights=spans[i]) for i, v in order],
            model=name,
            meta=_meta("2"),
        )

    @app.post("/rerank", response_model=list[TeiResult], response_model_exclude_none=True, responses=ERRORS)
    async def rerank_tei(request: Request, body: TeiRequest) -> list[TeiResult]:
        """text-embeddings-inference shape."""
        check = None if body.truncate else lambda texts: _refuse_cut(ranker, texts)
        order = await service.ranked(
            request, body.query, body.texts, None, body.raw_scores, check, body.truncate, body.relevance
        )
        spans = await service.highlighted(body.return_highlights, body.query, body.texts, order)
        return [
            TeiResult(index=i, score=v, text=body.texts[i] if body.return_text else None, highlights=spans[i])
            for i, v in order
        ]


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
            **ranker.device_memory(),
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


def _cut_tokens(ranker: HeadRanker, documents: list[str], limit: int) -> list[str]:
    """Each document cut to its first `limit` tokens of the served model's tokenizer (Cohere's
    `max_tokens_per_doc`)."""
    return [text for text, _ in ranker.cut_to_tokens(documents, limit)]


def _visible(document: Document) -> Document:
    """A document whose text or title has nothing visible has it empty (see INVISIBLE): one rule for all."""
    if isinstance(document, str):
        return blank_as_empty(document)
    title = blank_as_empty(document.get("title") or "")
    return {"text": blank_as_empty(document["text"]), **({"title": title} if title else {})}


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
        return unicode_text("\n".join(p for p in map(blank_as_empty, parts) if p))
    except RecursionError:
        raise HTTPException(422, f"documents.{index}: a rank field is nested too deeply") from None
    except ValueError as err:
        raise HTTPException(422, f"documents.{index}: {err}") from None


def _refuse_cut(ranker: HeadRanker, texts: Sequence[str]) -> Sequence[str]:
    """TEI's `truncate: false`: the texts as they are, or 422 naming the first one the ranker would cut."""
    over = ranker.overlong_passages(texts)
    if over:
        i, tokens = over[0]
        limit = ranker.passage_limit
        raise HTTPException(422, f"texts.{i}: {tokens} tokens, over the passage limit ({limit}), and truncate is false")
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
