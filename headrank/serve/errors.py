"""Error answers: readable 400/422 bodies that echo only short excerpts of what the client sent."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from headrank.serve.schemas import RerankRequest, RerankRequestV2, TeiRequest, TextDocument


def error_response(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


FIELDS = frozenset(
    name for request in (TextDocument, RerankRequest, RerankRequestV2, TeiRequest) for name in request.model_fields
)
"""every field a request can have: a location's other parts are pydantic's names for union members."""


def _where(loc: Sequence) -> list:
    """A location as the client wrote it: list indices and field names, without "body" and union member tags
    (`function-after[unicode_text(), str]`)."""
    return [p for p in loc if isinstance(p, int) or p in FIELDS]


def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 for a body that is not JSON, 422 with one readable line per problem otherwise."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "request body is not valid JSON")
    lines, shown = [], []
    for e in errors:
        loc = _where(e.get("loc", ()))
        where = ".".join(map(str, loc))
        message = e.get("msg")
        if where == "query" and e.get("type") in ("string_too_short", "too_short", "string_pattern_mismatch"):
            message = "query is empty"  # the schema's minLength/pattern, said plainly
        lines.append(f"{where}: {message}" if where else str(message))
        shown.append({"type": e.get("type"), "loc": loc, "msg": encodable(message), "input": excerpt(e.get("input"))})
        if e.get("ctx"):
            shown[-1]["ctx"] = {str(k): excerpt(v) for k, v in e["ctx"].items()}
    return JSONResponse({"detail": encodable("; ".join(dict.fromkeys(lines))), "errors": shown}, 422)


PARSE_FAILURES = {RecursionError: "is nested too deeply to parse", UnicodeDecodeError: "is not UTF-8 text"}


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own 400 for a body it cannot decode at all says what is wrong (not UTF-8, nested too deeply);
    every other error keeps its status, detail and headers."""
    detail = exc.detail
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        why = next((v for k, v in PARSE_FAILURES.items() if isinstance(exc.__cause__, k)), "could not be parsed")
        detail = f"request body is not valid JSON: it {why}"
    return JSONResponse({"detail": encodable(detail)}, status_code=exc.status_code, headers=exc.headers)


EXCERPT = 80
"""characters of a client's string that an error may echo."""


def excerpt(value):
    """What an error may echo of a value the client sent: a number, boolean or null as it is, a string cut to
    EXCERPT characters, a list or object only as its size (it may be large, or nested past any recursion
    limit). Always encodable: a lone surrogate is shown escaped (\\ud800), a non-finite number by name."""
    if isinstance(value, str):
        return encodable(value if len(value) <= EXCERPT else value[:EXCERPT] + "...")
    if isinstance(value, list | tuple):
        return f"<array of length {len(value)}>"
    if isinstance(value, dict):
        return f"<object of size {len(value)}>"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, bool | int | float):
        return encodable(value)
    return excerpt(str(value))


def encodable(value):
    """A scalar an error body echoes, made encodable: a lone surrogate is shown escaped (\\ud800), a
    non-finite number as its name ("inf", "nan")."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
