"""The HTTP service: the app and its wire shapes, the scheduler, keys, limits, metrics and the page.

`from headrank.serve import create_app, serve, ServeConfig` works as before the package was split; the names
are imported when asked for, so that the light modules here (limits, config) load without FastAPI."""

from __future__ import annotations

from importlib import import_module

_HOMES = {
    "ServeConfig": "headrank.serve.config",
    "create_app": "headrank.serve.app",
    "serve": "headrank.serve.runner",
    "bind": "headrank.serve.runner",
    "http_server": "headrank.serve.runner",
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'headrank.serve' has no attribute {name!r}")
