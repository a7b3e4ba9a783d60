"""The server's settings, declared once: `headrank serve`'s flags are made from these fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from headrank.serve.auth import check_key
from headrank.serve.limits import MAX_QUERY_TOKENS


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
