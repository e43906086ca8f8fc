"""The uvicorn settings every HTTP service of the framework runs with (search, judge, and their loopback stand-ins).

uvicorn closes an idle keep-alive connection after 5 s by default, and httpx keeps an idle connection for reuse for
exactly 5 s too. A client that reuses a connection just before its own expiry can then send a request onto a socket
the server is closing, and gets "Server disconnected without sending a response": a spurious retry in a teacher
run, a failed search in a rollout. Holding idle connections well past any client's expiry leaves the close to the
client, which never races with its own requests.

Bound to loopback a service serves this machine only; bound to any other address it requires an API key, which its
clients send in the `X-API-Key` header (`/health` stays open for probes).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import HTTPException, Request

from unidoc_rl.common.service_access import API_KEY_HEADER

KEEP_ALIVE_S = 75.0
"""Seconds a server keeps an idle connection open; above httpx's 5 s keep-alive expiry (and aiohttp's 15 s)."""


def server_config(app, host: str, port: int, log_level: str = "info", **options: Any) -> uvicorn.Config:
    """A uvicorn config for `app` with the framework's keep-alive; `options` are further uvicorn settings."""
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_S, **options)


def run_server(app, host: str, port: int, log_level: str = "info") -> None:
    """Serve `app` in the foreground until interrupted (uvicorn's own `run`: exits non-zero if it cannot bind)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_S)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_key_beyond_loopback(host: str, api_key: str | None, how_to_set: str) -> None:
    """Refuse to serve beyond this machine without an API key; `how_to_set` names the flag and variable."""
    if not is_loopback(host) and not api_key:
        raise ValueError(
            f"binding to {host} exposes the service beyond this machine: set an API key ({how_to_set}); "
            f"clients send it in the {API_KEY_HEADER} header"
        )


def api_key_guard(api_key: str | None) -> Callable:
    """A FastAPI dependency that answers 401 unless the request carries `api_key` (no check when it is None)."""

    def check(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get(API_KEY_HEADER, "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(status_code=401, detail=f"missing or wrong {API_KEY_HEADER} header")

    return check
