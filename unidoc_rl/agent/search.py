"""How the agent loop reaches a page-image search engine.

A backend answers batched queries with ranked hits and loads the image behind a hit. The HTTP client of the
search service (`search_engine.client.AsyncSearchClient`) is one; in-process backends (registered under a name
and addressed as `inprocess://name`) serve benchmarks and tests that must control results exactly.

The agent loop is instantiated once per trajectory, so HTTP clients are shared: one per (URL, event loop).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from unidoc_rl.common.service_access import service_root

INPROCESS_SCHEME = "inprocess://"


class SearchBackend(Protocol):
    """Hits are objects with a `page_id` (`search_engine.types.SearchHit`)."""

    async def search(self, queries: list[str], top_k: int | None = None) -> list[list[Any]]: ...

    async def load_image(self, hit: Any) -> Image.Image: ...


_inprocess: dict[str, SearchBackend] = {}
_http_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SearchBackend]] = (
    weakref.WeakKeyDictionary()
)


def register_inprocess_backend(name: str, backend: SearchBackend) -> str:
    """Make `backend` reachable as `inprocess://name`; returns that URL."""
    _inprocess[name] = backend
    return INPROCESS_SCHEME + name


def unregister_inprocess_backend(name: str) -> None:
    _inprocess.pop(name, None)


def resolve_backend(url: str, timeout: float = 10.0, retries: int = 3, api_key: str | None = None) -> SearchBackend:
    if not url:
        raise ValueError("no search URL configured (unidoc_agent.search_url)")
    if url.startswith(INPROCESS_SCHEME):
        name = url[len(INPROCESS_SCHEME) :]
        if name not in _inprocess:
            raise ValueError(f"no in-process search backend named {name!r}; registered: {sorted(_inprocess)}")
        return _inprocess[name]
    from search_engine.client import SEARCH_ENDPOINT, AsyncSearchClient

    root = service_root(url, SEARCH_ENDPOINT)  # the service root or its /search endpoint: one client for both
    clients = _http_clients.setdefault(asyncio.get_running_loop(), {})
    if root not in clients:
        clients[root] = AsyncSearchClient(root, timeout=timeout, retries=retries, api_key=api_key)
    return clients[root]


@dataclass(frozen=True)
class StaticHit:
    page_id: str
    score: float = 0.0


class StaticSearchBackend:
    """Fixed results per query over in-memory pages (benchmarks, tests, debugging); unknown queries get none."""

    def __init__(self, pages: dict[str, Image.Image], results: dict[str, list[str]]):
        missing = sorted({page_id for ids in results.values() for page_id in ids} - set(pages))
        if missing:
            raise ValueError(f"results name pages that do not exist: {missing}")
        self.pages = pages
        self.results = results
        self.queries: list[str] = []

    async def search(self, queries: list[str], top_k: int | None = None) -> list[list[StaticHit]]:
        self.queries.extend(queries)
        return [[StaticHit(page_id) for page_id in self.results.get(query, [])[:top_k]] for query in queries]

    async def load_image(self, hit: StaticHit) -> Image.Image:
        return self.pages[hit.page_id]
