"""What an operator watches the HTTP service with: a request id on every answer and every log line about it, TEI's
timing headers, one structured log line per request, and Prometheus metrics in a registry of the app's own (so
that several apps in one process, as in the tests, never share a counter)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from headrank.serve.scheduler import JobClock, Scheduler

REQUEST_LOG = logging.getLogger("headrank.requests")
REQUEST_ID_HEADER = "x-request-id"
TIMING_HEADERS = ("x-compute-time", "x-queue-time", "x-inference-time", "x-tokenization-time", "x-total-time")
VALID_ID = re.compile(r"[!-~]{1,128}")
"""a client's X-Request-Id is kept when it is 1 to 128 visible ASCII characters; any other is replaced by a new
one (it goes into headers and logs as it is)."""
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120)
"""histogram buckets of the latencies, from a GPU's milliseconds to a CPU's long lists."""


@dataclass
class Trace:
    """One request as the operator sees it: its id, route, what it held and cost, and its job's clock."""

    request_id: str
    route: str
    start: float = field(default_factory=time.monotonic)
    documents: int = 0
    passages: int = 0
    """distinct passages put into its prompts (a repeated or empty document counts once)."""
    clock: JobClock = field(default_factory=JobClock)
    warnings: list[str] = field(default_factory=list)

    def stages(self) -> dict[str, float | None]:
        """Seconds in each stage the request reached (None: not reached)."""
        c = self.clock
        return {
            "tokenize": c.tokenize_s,
            "queue": None if c.queued is None or c.started is None else c.started - c.queued,
            "inference": None if c.started is None or c.finished is None else c.finished - c.started,
        }


CURRENT: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("headrank_request", default=None)
"""the request being served in this context (the handler, its threads and the log lines they write)."""


def current() -> Trace:
    """The trace of the request in this context; a detached one outside a request (a direct call, a test)."""
    return CURRENT.get() or Trace(request_id="-", route="-")


class RequestIdFilter(logging.Filter):
    """Gives every log record the id of the request it was written for (`-` outside one), as `request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        trace = CURRENT.get()
        record.request_id = trace.request_id if trace else "-"
        return True


def log_config(level: str = "INFO") -> dict:
    """uvicorn's logging, every line (its own, its access lines, headrank's) with the request id in it."""
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["request_id"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}},
        "handlers": {"stderr": {**handler, "stream": "ext://sys.stderr"}},
        "loggers": {
            name: {"handlers": ["stderr"], "level": level, "propagate": False}
            for name in ("uvicorn", "uvicorn.access", "headrank")
        },
    }


class ServeMetrics:
    """The service's Prometheus metrics (names and meanings: docs/serving.md, "Metrics")."""

    def __init__(self, scheduler: Scheduler):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "headrank_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=registry
        )
        self.documents = Counter(
            "headrank_documents", "documents of the requests answered 200", ["route"], registry=registry
        )
        self.passages = Counter(
            "headrank_passages",
            "distinct passages scored for requests answered 200 (a repeated or empty document counts once)",
            ["route"],
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "headrank_prompt_tokens",
            "prompt tokens (passages and query span) of the requests answered 200",
            ["route"],
            registry=registry,
        )
        self.pass_prompts = Histogram(
            "headrank_pass_prompts",
            "prompts in each forward pass (its _count: the forward passes, warm-up included)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.pass_tokens = Histogram(
            "headrank_pass_padded_tokens",
            "padded tokens of each forward pass (prompts x the longest)",
            buckets=tuple(2**k for k in range(6, 18)),
            registry=registry,
        )
        Gauge("headrank_queue_waiting", "requests waiting for the worker", registry=registry).set_function(
            lambda: scheduler.waiting.qsize()
        )
        Gauge("headrank_requests_active", "requests the worker is serving", registry=registry).set_function(
            lambda: len(scheduler.active)
        )
        self.ready = Gauge("headrank_ready", "1 while /health answers 200 (warm, not shutting down)", registry=registry)
        self.total = Histogram(
            "headrank_request_duration_seconds",
            "time from a request's arrival to its answer, by route (every status)",
            ["route"],
            buckets=SECONDS,
            registry=registry,
        )
        self.stages = {
            stage: Histogram(
                f"headrank_{stage}_seconds",
                f"{what}, of each request that went through it",
                buckets=SECONDS,
                registry=registry,
            )
            for stage, what in (
                ("tokenize", "time tokenizing the list into prompts"),
                ("queue", "time from queued to the first forward pass that holds one of its prompts"),
                ("inference", "time from its first forward pass to the end of its last"),
            )
        }
        scheduler.on_pass = self._count_pass

    def _count_pass(self, prompts: int, padded_tokens: int) -> None:
        self.pass_prompts.observe(prompts)
        self.pass_tokens.observe(padded_tokens)

    def record(self, trace: Trace, status: int, seconds: float) -> None:
        self.requests.labels(trace.route, str(status)).inc()
        self.total.labels(trace.route).observe(seconds)
        for stage, spent in trace.stages().items():
            if spent is not None:
                self.stages[stage].observe(spent)
        if status == 200:
            self.documents.labels(trace.route).inc(trace.documents)
            self.passages.labels(trace.route).inc(trace.passages)
            self.prompt_tokens.labels(trace.route).inc(trace.clock.prompt_tokens)

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _ms(seconds: float | None) -> str:
    return str(round(1000 * seconds)) if seconds is not None else "0"


class RequestTracer:
    """ASGI middleware around everything but CORS: it gives each request its id (the client's X-Request-Id when
    valid, a new one otherwise), answers it in `x-request-id` and TEI's timing headers (whole milliseconds, 0 for
    a stage the request did not reach), counts it in the metrics and writes its one structured log line."""

    def __init__(self, app, metrics: ServeMetrics, routes: Iterable[str]):
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-request-id"), "")
        path = scope["path"]
        trace = Trace(
            request_id=given if VALID_ID.fullmatch(given) else uuid.uuid4().hex,
            route=path if path in self.routes else "unmatched",  # no label per scanned path
        )
        token, finished = CURRENT.set(trace), False

        async def traced_send(message):
            nonlocal finished
            if message["type"] == "http.response.start" and not finished:
                finished = True  # counted and logged before the answer leaves: a client that reads it sees it counted
                total = self._finish(trace, scope["method"], message["status"])
                stages = trace.stages()
                timings = (total, stages["queue"], stages["inference"], stages["tokenize"], total)
                added = [(REQUEST_ID_HEADER.encode(), trace.request_id.encode())]
                added += [(name.encode(), _ms(s).encode()) for name, s in zip(TIMING_HEADERS, timings)]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        finally:
            if not finished:  # no answer went out (an error the server answers 500 outside this middleware)
                self._finish(trace, scope["method"], 500)
            CURRENT.reset(token)

    def _finish(self, trace: Trace, method: str, status: int) -> float:
        """Count the request and write its line; its total seconds."""
        total = time.monotonic() - trace.start
        self.metrics.record(trace, status, total)
        line = {
            "request_id": trace.request_id,
            "method": method,
            "route": trace.route,
            "status": status,
            "documents": trace.documents,
            "passages": trace.passages,
            "prompt_tokens": trace.clock.prompt_tokens,
            **{f"{stage}_ms": None if s is None else round(1000 * s, 1) for stage, s in trace.stages().items()},
            "total_ms": round(1000 * total, 1),
        }
        REQUEST_LOG.info(json.dumps(line))
        return total
