"""HTTP service over one HeadRanker: Cohere/Jina `POST /v1/rerank` and text-embeddings-inference `POST /rerank`.

The model is loaded once, before the app starts. One worker thread owns it: requests wait in a bounded
queue (429 when full), and the worker advances up to `max_active` of them one forward pass at a time in
turn, so a long list (many passes) cannot hold back a short one and memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field

from headrank.evaluate import peak_rss_mb
from headrank.ranker import HeadRanker
from headrank.results import Document


@dataclass(frozen=True)
class ServeConfig:
    model_name: str = "headrank"
    """the name answered in `model` (a request's own `model` field is accepted and ignored)."""
    max_documents: int = 1000
    max_body_bytes: int = 4 * 1024 * 1024
    queue_size: int = 32
    """requests waiting for the worker; one more is answered 429."""
    max_active: int = 4
    """requests the worker advances in turn, one forward pass each."""

    def __post_init__(self):
        for name in ("max_documents", "max_body_bytes", "queue_size", "max_active"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class QueueFull(Exception):
    """The request queue is at capacity: the client should retry later."""


@dataclass
class _Job:
    count: int
    steps: Iterator
    future: Future = field(default_factory=Future)
    lists: list = field(default_factory=list)


class Scheduler:
    """One worker thread that owns the model and interleaves the forward passes of active requests."""

    def __init__(self, ranker: HeadRanker, queue_size: int = 32, max_active: int = 4):
        self.ranker = ranker
        self.max_active = max_active
        self.waiting: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.active: deque[_Job] = deque()
        """admitted jobs, the one whose pass is running first."""
        self._thread = threading.Thread(target=self._run, name="headrank-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.waiting.put(None)
        self._thread.join()

    def submit(self, query: str, documents: Sequence[Document]) -> Future:
        """Queue a list for scoring; the future gets one score per document. Input is checked here."""
        job = _Job(len(documents), self.ranker.iter_lists(query, documents))
        try:
            self.waiting.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.waiting.maxsize} requests already waiting") from None
        return job.future

    def _admit(self) -> bool:
        """Move waiting jobs into the active set (blocking when idle); False once stopped."""
        while len(self.active) < self.max_active:
            try:
                job = self.waiting.get(block=not self.active)
            except queue.Empty:
                return True
            if job is None:
                return False
            self.active.append(job)
        return True

    def _run(self) -> None:
        while self._admit():
            if self._step(self.active[0]):
                self.active.popleft()
            else:
                self.active.rotate(-1)
        for job in self.active:
            job.future.cancel()

    def _step(self, job: _Job) -> bool:
        """One forward pass of a job; True once it is over (scored, failed, or its client went away)."""
        if job.future.cancelled():
            return True
        try:
            step = next(job.steps, None)
            if step is not None:
                job.lists.append(step)
                return False
            self._settle(job, result=self.ranker.combine(job.count, job.lists))
        except Exception as err:  # one bad request must not stop the worker
            self._settle(job, error=err)
        return True

    @staticmethod
    def _settle(job: _Job, result=None, error: Exception | None = None) -> None:
        with contextlib.suppress(InvalidStateError):  # cancelled meanwhile
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)


class TextDocument(BaseModel):
    text: str
    title: str | None = None


def _nonempty(query: str) -> str:
    if not query.strip():
        raise ValueError("query is empty")
    return query


Query = Annotated[str, AfterValidator(_nonempty)]


class RerankRequest(BaseModel):
    """Cohere / Jina rerank request."""

    model: str | None = None
    query: Query
    documents: list[str | TextDocument]
    top_n: int | None = Field(default=None, ge=1, description="answer only the best n; all are scored")
    return_documents: bool = True


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: TextDocument | None = None


class RerankResponse(BaseModel):
    results: list[RerankResult]
    model: str
    usage: dict[str, int]


class TeiRequest(BaseModel):
    """text-embeddings-inference rerank request (its other fields are accepted and ignored)."""

    query: Query
    texts: list[str]
    return_text: bool = False


class TeiResult(BaseModel):
    index: int
    score: float
    text: str | None = None


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
        lines.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return JSONResponse({"detail": "; ".join(lines), "errors": json.loads(json.dumps(errors, default=str))}, 422)


async def _result(future: Future, request: Request, poll_s: float = 0.5) -> list[float]:
    """The scores; if the client goes away first, cancel the job so that the worker drops its remaining passes."""
    waiting = asyncio.wrap_future(future)
    while not (await asyncio.wait({waiting}, timeout=poll_s))[0]:
        if await request.is_disconnected():
            future.cancel()
            raise HTTPException(499, "client closed the request")
    return waiting.result()


def create_app(ranker: HeadRanker, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app over a loaded ranker; its worker thread runs while the app is served."""
    config = config or ServeConfig()
    scheduler = Scheduler(ranker, config.queue_size, config.max_active)

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

    async def scores(request: Request, query: str, documents: Sequence[Document]) -> list[float]:
        if len(documents) > config.max_documents:
            raise HTTPException(422, f"at most {config.max_documents} documents per request, got {len(documents)}")
        if not documents:
            return []
        try:
            future = scheduler.submit(query, documents)
        except QueueFull as err:
            raise HTTPException(429, f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from err
        except (TypeError, ValueError) as err:
            raise HTTPException(422, str(err)) from err
        try:
            return await _result(future, request)
        except (TypeError, ValueError) as err:  # e.g. a passage longer than the model takes
            raise HTTPException(422, str(err)) from err

    def best_first(values: list[float], top_n: int | None) -> list[int]:
        # ties keep the input order, as HeadRanker.rank does
        return sorted(range(len(values)), key=lambda i: (-values[i], i))[:top_n]

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "model": config.model_name,
            "waiting": scheduler.waiting.qsize(),
            "active": len(scheduler.active),
            "queue_size": config.queue_size,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }

    @app.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
    async def rerank(request: Request, body: RerankRequest) -> RerankResponse:
        docs = [TextDocument(text=d) if isinstance(d, str) else d for d in body.documents]
        values = await scores(request, body.query, [d.model_dump(exclude_none=True) for d in docs])
        results = [
            RerankResult(index=i, relevance_score=values[i], document=docs[i] if body.return_documents else None)
            for i in best_first(values, body.top_n)
        ]
        return RerankResponse(results=results, model=config.model_name, usage={"documents": len(docs)})

    @app.post("/rerank", response_model=list[TeiResult], response_model_exclude_none=True)
    async def rerank_tei(request: Request, body: TeiRequest) -> list[TeiResult]:
        values = await scores(request, body.query, body.texts)
        return [
            TeiResult(index=i, score=values[i], text=body.texts[i] if body.return_text else None)
            for i in best_first(values, None)
        ]

    return app


def serve(ranker: HeadRanker, host: str = "127.0.0.1", port: int = 8000, config: ServeConfig | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(ranker, config), host=host, port=port)
