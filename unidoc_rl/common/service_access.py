"""How clients address the framework's HTTP services (search and judge alike).

A service URL may be given as the service root or as its endpoint (`http://host:8001/search`, `http://host:8003/eval`,
as the reference repository writes them); `service_root` turns either into the root that the clients put their paths
after. A service bound beyond loopback admits only clients that send its API key in the `API_KEY_HEADER` header
(the services' side: `unidoc_rl.common.http_server`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

API_KEY_HEADER = "X-API-Key"


def service_root(url: str, endpoint: str) -> str:
    """The root of a service from its root or its `endpoint` URL (`endpoint` like "/search"); http(s) only."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"service URL {url!r} is not an http(s) URL like http://127.0.0.1:8001")
    root = url.strip().rstrip("/")
    return root.removesuffix(endpoint).rstrip("/") if root.endswith(endpoint) else root
