"""Client retries: backoff on connection errors and 5xx, never on 4xx; SearchError carries the server's message."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from search_engine.client import AsyncSearchClient, SearchClient, SearchError
from unidoc_rl.standins.serving import free_port

HIT = {"idx": 0, "image_file": "/corpus/pages/a_1.png", "page_id": "a_1", "score": 1.5}


def _flaky_app(failures: int, status: int) -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    calls: list[int] = []

    @app.post("/search")
    async def search() -> JSONResponse:
        calls.append(1)
        if len(calls) <= failures:
            return JSONResponse({"detail": f"failure {len(calls)}"}, status_code=status)
        return JSONResponse({"results": [[HIT]]})

    return app, calls


def test_retries_5xx_then_succeeds(run_service):
    app, calls = _flaky_app(failures=2, status=503)
    with run_service(app) as url, SearchClient(url, retries=3, backoff_seconds=0.01) as client:
        hits = client.search(["q"])
    assert len(calls) == 3 and hits[0][0].page_id == "a_1" and hits[0][0].score == 1.5


def test_gives_up_after_retries_with_the_last_message(run_service):
    app, calls = _flaky_app(failures=10, status=500)
    with run_service(app) as url, SearchClient(url, retries=2, backoff_seconds=0.01) as client:
        with pytest.raises(SearchError, match=r"after 3 attempts \(HTTP 500: failure 3\)"):
            client.search(["q"])
    assert len(calls) == 3


def test_never_retries_4xx(run_service):
    app, calls = _flaky_app(failures=10, status=422)
    with run_service(app) as url, SearchClient(url, retries=3, backoff_seconds=0.01) as client:
        with pytest.raises(SearchError, match="HTTP 422: failure 1") as raised:
            client.search(["q"])
    assert len(calls) == 1 and raised.value.status_code == 422


def test_connection_refused_is_retried_then_reported():
    with SearchClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff_seconds=0.01) as client:
        with pytest.raises(SearchError, match="after 2 attempts \\(ConnectError") as raised:
            client.search(["q"])
    assert raised.value.status_code is None


async def test_async_client_retries_5xx(run_service):
    app, calls = _flaky_app(failures=1, status=502)
    with run_service(app) as url:
        client = AsyncSearchClient(url, retries=2, backoff_seconds=0.01)
        try:
            hits = await client.search(["q"], top_k=1)
        finally:
            await client.aclose()
    assert len(calls) == 2 and hits[0][0].page_id == "a_1"
