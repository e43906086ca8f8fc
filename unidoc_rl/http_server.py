"""The uvicorn settings every HTTP service of the framework runs with (search, judge, and their loopback stand-ins).

uvicorn closes an idle keep-alive connection after 5 s by default, and httpx keeps an idle connection for reuse for
exactly 5 s too. A client that reuses a connection just before its own expiry can then send a request onto a socket
the server is closing, and gets "Server disconnected without sending a response": a spurious retry in a teacher
run, a failed search in a rollout. Holding idle connections well past any client's expiry leaves the close to the
client, which never races with its own requests.
"""

from __future__ import annotations

from typing import Any

import uvicorn

KEEP_ALIVE_S = 75.0
"""Seconds a server keeps an idle connection open; above httpx's 5 s keep-alive expiry (and aiohttp's 15 s)."""


def server_config(app, host: str, port: int, log_level: str = "info", **options: Any) -> uvicorn.Config:
    """A uvicorn config for `app` with the framework's keep-alive; `options` are further uvicorn settings."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_S, **options)


def run_server(app, host: str, port: int, log_level: str = "info") -> None:
    """Serve `app` in the foreground until interrupted (uvicorn's own `run`: exits non-zero if it cannot bind)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_S)
