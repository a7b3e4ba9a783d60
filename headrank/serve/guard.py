"""The body guard: a request body is checked (size, JSON, gzip) before anything parses it."""

from __future__ import annotations

import zlib
from collections.abc import Mapping

from fastapi.responses import JSONResponse

from headrank.serve.errors import error_response, excerpt


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
                return await error_response(413, f"request body over {self.limit} bytes")(scope, receive, send)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if takes_json and headers.get("content-encoding", "").strip().lower() in GZIP:
            try:
                body = _gunzip(body, self.limit)
            except ValueError as err:
                return await error_response(400, f"request body is not valid gzip: {err}")(scope, receive, send)
            if body is None:
                return await error_response(413, f"request body over {self.limit} bytes once decompressed")(
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


def _refused_headers(headers: Mapping[str, str], limit: int, takes_json: bool) -> JSONResponse | None:
    """The answer to a request whose headers alone rule it out, before its body is read; None if none does."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return error_response(413, f"request body over {limit} bytes")
    if not takes_json:
        return None
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", *GZIP):
        return error_response(415, f"Content-Encoding {excerpt(encoding)!r} is not supported: send gzip or no encoding")
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not (media == "application/json" or media.startswith("application/") and media.endswith("+json")):
        received = f"Content-Type {excerpt(headers['content-type'])!r}" if media else "no Content-Type"
        return error_response(415, f"request has {received}: send the body as application/json")
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
