"""Clients of the search service, for the agent loop and data synthesis (sync and asyncio).

Both take the service root or its /search endpoint as the URL. Both retry with exponential backoff on connection
errors, timeouts and 5xx answers, never on 4xx, and raise SearchError with the server's message when they give up.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from search_engine.types import SearchHit
from unidoc_rl.common.service_access import API_KEY_HEADER, service_root

SEARCH_ENDPOINT = "/search"


class SearchError(Exception):
    """A search request failed; `status_code` is None when the service could not be reached."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


def _headers(api_key: str | None) -> dict[str, str]:
    return {API_KEY_HEADER: api_key} if api_key else {}


def _server_message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else response.text[:500]


def _check(response: httpx.Response, what: str) -> httpx.Response:
    if response.status_code >= 400:
        raise SearchError(f"{what}: HTTP {response.status_code}: {_server_message(response)}", response.status_code)
    return response


def _parse_results(payload: Any, num_queries: int) -> list[list[SearchHit]]:
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list) or len(results) != num_queries:
        raise SearchError(f"malformed search response: expected results for {num_queries} queries")
    return [[SearchHit.from_dict(hit) for hit in hits] for hits in results]


def _open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _local_image(hit: SearchHit) -> Image.Image | None:
    path = Path(hit.image_file)
    if not path.is_file():
        return None
    with Image.open(path) as image:
        image.load()
        return image.copy()


class SearchClient:
    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        retries: int = 3,
        api_key: str | None = None,
        backoff_seconds: float = 0.2,
    ):
        self.base_url = service_root(base_url, SEARCH_ENDPOINT)
        self.retries = retries
        self.backoff_seconds = backoff_seconds
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=_headers(api_key))

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code < 500:
                return _check(response, f"{method} {path}")
            last = f"HTTP {response.status_code}: {_server_message(response)}"
        raise SearchError(f"{method} {self.base_url}{path} failed after {self.retries + 1} attempts ({last})")

    def search(self, queries: list[str], top_k: int | None = None) -> list[list[SearchHit]]:
        body: dict[str, Any] = {"queries": list(queries)}
        if top_k is not None:
            body["top_k"] = top_k
        return _parse_results(self._request("POST", SEARCH_ENDPOINT, json=body).json(), len(queries))

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health").json()

    def load_image(self, hit: SearchHit) -> Image.Image:
        """The page image: the local file when this machine sees it, else GET /image/{page_id}."""
        local = _local_image(hit)
        if local is not None:
            return local
        return _open_image(self._request("GET", f"/image/{hit.page_id}").content)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AsyncSearchClient:
    """The asyncio twin of SearchClient; one httpx.AsyncClient per event loop that uses it."""

    def __init__(
        self,
        base_url: str,
        timeout: float = 10.0,
        retries: int = 3,
        api_key: str | None = None,
        backoff_seconds: float = 0.2,
    ):
        self.base_url = service_root(base_url, SEARCH_ENDPOINT)
        self.timeout = timeout
        self.retries = retries
        self.api_key = api_key
        self.backoff_seconds = backoff_seconds
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop or self._http.is_closed:
            self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout, headers=_headers(self.api_key))
            self._loop = loop
        return self._http

    async def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
            try:
                response = await self._client().request(method, path, **kwargs)
            except httpx.TransportError as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code < 500:
                return _check(response, f"{method} {path}")
            last = f"HTTP {response.status_code}: {_server_message(response)}"
        raise SearchError(f"{method} {self.base_url}{path} failed after {self.retries + 1} attempts ({last})")

    async def search(self, queries: list[str], top_k: int | None = None) -> list[list[SearchHit]]:
        body: dict[str, Any] = {"queries": list(queries)}
        if top_k is not None:
            body["top_k"] = top_k
        response = await self._request("POST", SEARCH_ENDPOINT, json=body)
        return _parse_results(response.json(), len(queries))

    async def health(self) -> dict[str, Any]:
        return (await self._request("GET", "/health")).json()

    async def load_image(self, hit: SearchHit) -> Image.Image:
        local = await asyncio.to_thread(_local_image, hit)
        if local is not None:
            return local
        return _open_image((await self._request("GET", f"/image/{hit.page_id}")).content)

    async def aclose(self) -> None:
        if self._http is not None and not self._http.is_closed and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = None

    async def __aenter__(self) -> AsyncSearchClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()
