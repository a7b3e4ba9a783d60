"""API keys for the HTTP service: `Authorization: Bearer <key>`, the header the Cohere, LangChain and rerankers
clients already send. A key is compared in constant time (both sides hashed first, so neither its content nor its
length shows in the timing), and is never logged, echoed or shown in a repr."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

KEY_ENV = "HEADRANK_API_KEY"
OPEN_PATHS = frozenset({"/health", "/ping", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
"""answered without a key: the probes orchestrators send without one (they tell nothing about the data), and the
schema with its page (Swagger's "Authorize" button needs the schema first)."""
NO_KEY = "no API key: send the header 'Authorization: Bearer <key>'"
WRONG_KEY = "the API key is not valid"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def check_key(key: str, where: str) -> str:
    """A key as given, or ValueError naming where it came from (never the key)."""
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise ValueError(f"{where}: an API key must be non-empty, without spaces or control characters")
    return key


def load_keys(flags: Sequence[str] = (), key_file: str | Path | None = None, environ: Mapping[str, str] = os.environ):
    """Every key the server takes: `--api-key` flags, one key per line of `--api-key-file` (blank lines and
    lines starting with # skipped) and the environment's HEADRANK_API_KEY. A file or variable keeps a key out of
    the process list (`ps` shows a flag's value)."""
    keys = [check_key(k, "--api-key") for k in flags]
    if key_file is not None:
        lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        kept = [(n, s) for n, line in enumerate(lines, 1) if (s := line.strip()) and not s.startswith("#")]
        keys += [check_key(s, f"{key_file} line {n}") for n, s in kept]
    if environ.get(KEY_ENV, "").strip():
        keys.append(check_key(environ[KEY_ENV].strip(), KEY_ENV))
    return tuple(dict.fromkeys(keys))


class BearerAuth:
    """ASGI middleware: every path but `open_paths` answers 401 without a valid `Authorization: Bearer <key>`.
    It sits inside CORS (a browser's preflight carries no key) and the request tracer (a 401 is counted and
    logged, without the key)."""

    def __init__(self, app, keys: Iterable[str], open_paths: frozenset[str] = OPEN_PATHS):
        self.app = app
        self.digests = [_digest(k) for k in keys]
        self.open_paths = open_paths

    def valid(self, key: str) -> bool:
        given = _digest(key)
        return any([hmac.compare_digest(given, d) for d in self.digests])  # a list: every key compared, always

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"authorization"), "")
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            refusal = NO_KEY
        elif not self.valid(key.strip()):
            refusal = WRONG_KEY
        else:
            return await self.app(scope, receive, send)
        from fastapi.responses import JSONResponse  # here: the flags' key checks above load no web stack

        answer = JSONResponse({"detail": refusal}, 401, headers={"WWW-Authenticate": "Bearer"})
        await answer(scope, receive, send)


def declare_auth(schema: dict, open_paths: frozenset[str] = OPEN_PATHS) -> None:
    """Say in the OpenAPI schema which operations need the key, and that they answer 401 without it, so that
    generated clients send it and validators (schemathesis) expect the 401."""
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "one of the server's API keys (--api-key, --api-key-file, HEADRANK_API_KEY)",
    }
    for path, operations in schema["paths"].items():
        if path in open_paths:
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation.setdefault("responses", {})["401"] = {
                "description": "no API key, or not a valid one",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
            }
