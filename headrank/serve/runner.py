"""Running the app: the uvicorn server with its shutdown grace, and the socket bound before the model loads."""

from __future__ import annotations

import logging
import math
import socket
import time

from fastapi import FastAPI

from headrank.ranker import HeadRanker
from headrank.serve.app import POLL_S, create_app
from headrank.serve.config import ServeConfig
from headrank.serve.metrics import log_config


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
