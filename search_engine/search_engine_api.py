"""The search service (FastAPI): VRAG-compatible GET /search, batched POST /search, GET /health, GET /image/{id}.

    python search_engine/search_engine_api.py --dataset_dir examples/corpus            # 127.0.0.1:8002

    cd search_engine && SEARCH_DATASET_DIR=/corpus SEARCH_PORT=8001 python search_engine_api.py   # as the reference

Every setting is also read from an environment variable (UNIDOC_SEARCH_<NAME>, e.g. UNIDOC_SEARCH_DATASET_DIR), and
the dataset folder and port from the reference repository's SEARCH_DATASET_DIR and SEARCH_PORT; command-line flags
win, then UNIDOC_SEARCH_*, then the reference's names. The service binds to 127.0.0.1 unless told otherwise and then
requires an API key (header X-API-Key). Searches run off the event loop: concurrent requests are batched (one worker
thread encodes and scores the queries of many requests at once, search_engine/batching.py), or with
--max_batch_queries 0 each request is searched on its own in a worker thread. An ingest that updates the index is
picked up on the next batch (old or new index, never a mix).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from search_engine.batching import DEFAULT_BATCH_WAIT_MS, DEFAULT_MAX_BATCH_QUERIES, SearchBatcher
from search_engine.corpus import PAGES_DIRNAME
from search_engine.ingestion import INDEX_DIRNAME
from search_engine.ivf import DEFAULT_PREFILTER, DEFAULT_PROBE
from search_engine.maxsim import DEFAULT_RESIDENCY, RESIDENCY_MODES
from search_engine.residuals import DEFAULT_NBITS, NBITS_CHOICES
from search_engine.searcher import Searcher, SearchSettings
from search_engine.vector_index import DEFAULT_CANDIDATES
from unidoc_rl.common.http_server import api_key_guard, require_key_beyond_loopback, run_server

logger = logging.getLogger("search_engine.api")

ENV_PREFIX = "UNIDOC_SEARCH_"
REFERENCE_ENV = {"dataset_dir": "SEARCH_DATASET_DIR", "port": "SEARCH_PORT"}
"""The reference repository's variable names of these settings, read after UNIDOC_SEARCH_<NAME>."""


@dataclass
class ServiceConfig:
    dataset_dir: str = "."
    index_dir: str | None = None
    pages_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = 8002
    backend: str | None = None
    model: str | None = None
    mode: str = "exact"
    candidates: int = DEFAULT_CANDIDATES
    probe: int = DEFAULT_PROBE
    prefilter: int = DEFAULT_PREFILTER
    residual_bits: int = DEFAULT_NBITS
    residency: str = DEFAULT_RESIDENCY
    top_k: int = 10
    max_top_k: int = 100
    max_queries: int = 64
    max_query_chars: int = 2000
    max_body_bytes: int = 1 << 18
    # Batching of concurrent requests (batching.py): queries per batch at most (0: no batching, each request is
    # searched on its own in a worker thread), and how long a request finding the worker idle waits for others.
    max_batch_queries: int = DEFAULT_MAX_BATCH_QUERIES
    batch_wait_ms: int = DEFAULT_BATCH_WAIT_MS
    api_key: str | None = None
    device: str = "auto"
    log_level: str = "info"

    def resolved_index_dir(self) -> Path:
        return Path(self.index_dir) if self.index_dir else Path(self.dataset_dir) / INDEX_DIRNAME

    def resolved_pages_dir(self) -> Path:
        return Path(self.pages_dir) if self.pages_dir else Path(self.dataset_dir) / PAGES_DIRNAME

    def validate(self) -> None:
        if not 1 <= self.top_k <= self.max_top_k:
            raise ValueError(f"default top_k {self.top_k} must be in [1, max_top_k={self.max_top_k}]")
        require_key_beyond_loopback(self.host, self.api_key, f"--api_key or {ENV_PREFIX}API_KEY")


def config_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from UNIDOC_SEARCH_<NAME>, else the reference's name; ValueError names a variable that is no int."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in fields(ServiceConfig):
        names = [ENV_PREFIX + spec.name.upper(), REFERENCE_ENV.get(spec.name)]
        name = next((name for name in names if name and name in environ), None)
        if name is None:
            continue
        raw = environ[name]
        if spec.type in ("int", int):
            try:
                values[spec.name] = int(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not an integer") from None
        else:
            values[spec.name] = raw
    return values


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[StrictStr]
    top_k: StrictInt | None = None


class BodySizeLimit:
    """Reject request bodies over `max_bytes` with 413, whether or not they declare a Content-Length."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_large = JSONResponse({"detail": f"request body exceeds {self.max_bytes} bytes"}, status_code=413)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()) if part not in ("body", "query"))
        parts.append(f"{location}: {item.get('msg')}" if location else str(item.get("msg")))
    return "; ".join(parts) or "invalid request"


def create_app(config: ServiceConfig, searcher: Searcher | None = None) -> FastAPI:
    config.validate()
    if searcher is None:
        searcher = Searcher(
            config.resolved_index_dir(),
            config.resolved_pages_dir(),
            backend=config.backend,
            model=config.model,
            settings=SearchSettings(
                mode=config.mode,
                candidates=config.candidates,
                probe=config.probe,
                prefilter=config.prefilter,
                residual_bits=config.residual_bits,
                residency=config.residency,
            ),
            encoder_options={"device": config.device},
        )
    app = FastAPI(title="UniDoc-RL search service", version="1.0")
    app.state.searcher = searcher
    batcher = (
        SearchBatcher(searcher, config.max_batch_queries, config.batch_wait_ms) if config.max_batch_queries else None
    )
    app.state.batcher = batcher
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(error)}, status_code=422)

    require_api_key = api_key_guard(config.api_key)

    def check(queries: list[str], top_k: int | None) -> int:
        if not queries:
            raise HTTPException(status_code=422, detail="queries: at least one query is required")
        if len(queries) > config.max_queries:
            raise HTTPException(
                status_code=413, detail=f"queries: {len(queries)} queries exceed the limit of {config.max_queries}"
            )
        for i, query in enumerate(queries):
            if not query.strip():
                raise HTTPException(status_code=422, detail=f"queries.{i}: query is empty")
            if len(query) > config.max_query_chars:
                raise HTTPException(
                    status_code=413, detail=f"queries.{i}: {len(query)} characters exceed {config.max_query_chars}"
                )
        top_k = config.top_k if top_k is None else top_k
        if not 1 <= top_k <= config.max_top_k:
            raise HTTPException(status_code=422, detail=f"top_k: {top_k} is not in [1, {config.max_top_k}]")
        return top_k

    async def run_search(queries: list[str], top_k: int | None) -> list[list[dict[str, Any]]]:
        k = check(queries, top_k)
        try:
            if batcher is None:
                results = await run_in_threadpool(searcher.search, queries, k)
            else:
                results = await asyncio.wrap_future(batcher.submit(queries, k))
        except ValueError as error:  # the request's own input failed the encoder or scorer (others unaffected)
            raise HTTPException(status_code=422, detail=f"queries: {error}") from error
        return [[hit.to_dict() for hit in hits] for hits in results]

    @app.get("/search", dependencies=[Depends(require_api_key)])
    async def search_get(
        queries: Annotated[list[str], Query()], top_k: int | None = None
    ) -> list[list[dict[str, Any]]]:
        return await run_search(queries, top_k)

    @app.post("/search", dependencies=[Depends(require_api_key)])
    async def search_post(request: SearchRequest) -> dict[str, Any]:
        return {"results": await run_search(request.queries, request.top_k)}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        report = await run_in_threadpool(searcher.health)
        report["batching"] = batcher.stats() if batcher is not None else None
        return report

    @app.get("/image/{page_id}", dependencies=[Depends(require_api_key)])
    async def image(page_id: str) -> FileResponse:
        snapshot = await run_in_threadpool(searcher.snapshot)
        path = snapshot.image_file(page_id)
        if path is None:
            raise HTTPException(status_code=404, detail=f"unknown page id {page_id!r}")
        resolved = path.resolve()
        if not resolved.is_relative_to(snapshot.pages_dir) or not resolved.is_file():
            raise HTTPException(status_code=404, detail=f"no image for page id {page_id!r}")
        return FileResponse(resolved, media_type="image/png")

    return app


def build_parser() -> argparse.ArgumentParser:
    reference = ", ".join(f"--{flag}: {name}" for flag, name in REFERENCE_ENV.items())
    parser = argparse.ArgumentParser(
        description="Serve a search index over HTTP. Each flag defaults to the environment variable "
        f"{ENV_PREFIX}<FLAG in upper case>, then to the reference repository's variable where it has one "
        f"({reference}), then to the value shown: flags win, then {ENV_PREFIX}*, then the reference's names.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    try:
        defaults = ServiceConfig(**config_from_env())
    except ValueError as error:
        parser.error(str(error))
    parser.add_argument("--dataset_dir", default=defaults.dataset_dir, help="corpus folder given to ingestion")
    parser.add_argument("--index_dir", default=defaults.index_dir, help="index folder (default DATASET_DIR/index)")
    parser.add_argument("--pages_dir", default=defaults.pages_dir, help="page images (default DATASET_DIR/pages)")
    parser.add_argument("--host", default=defaults.host, help="bind address; non-loopback requires --api_key")
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--backend", default=defaults.backend, help="expected backend (error if the index differs)")
    parser.add_argument("--model", default=defaults.model, help="query model (default: the index's model)")
    parser.add_argument("--mode", choices=("exact", "approx"), default=defaults.mode, help="MaxSim search mode")
    parser.add_argument("--candidates", type=int, default=defaults.candidates, help="approx shortlist per query")
    parser.add_argument(
        "--probe", type=int, default=defaults.probe, help="approx with inverted lists: centroids per query vector"
    )
    parser.add_argument(
        "--prefilter", type=int, default=defaults.prefilter, help="approx with inverted lists: pages scored pooled"
    )
    parser.add_argument(
        "--residual_bits",
        type=int,
        choices=NBITS_CHOICES,
        default=defaults.residual_bits,
        help="approx with inverted lists: bits per dimension of the residuals the lists are scored from",
    )
    parser.add_argument(
        "--residency",
        choices=RESIDENCY_MODES,
        default=defaults.residency,
        help="how the vectors are held: a resident fp16 or fp32 copy built at open, or only the memory-mapped shards",
    )
    parser.add_argument("--top_k", type=int, default=defaults.top_k, help="results per query when not given")
    parser.add_argument("--max_top_k", type=int, default=defaults.max_top_k)
    parser.add_argument("--max_queries", type=int, default=defaults.max_queries, help="queries per request")
    parser.add_argument("--max_query_chars", type=int, default=defaults.max_query_chars)
    parser.add_argument("--max_body_bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument(
        "--max_batch_queries",
        type=int,
        default=defaults.max_batch_queries,
        help="queries of concurrent requests encoded and scored together at most; 0: no batching",
    )
    parser.add_argument(
        "--batch_wait_ms",
        type=int,
        default=defaults.batch_wait_ms,
        help="how long a request that finds the batch worker idle waits for others to join it",
    )
    parser.add_argument("--api_key", default=defaults.api_key, help="required in the X-API-Key header")
    parser.add_argument("--device", default=defaults.device, help="torch device of the query encoder")
    parser.add_argument("--log_level", default=defaults.log_level)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = ServiceConfig(**vars(args))
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(config)
    except Exception as error:  # a clear one-line reason instead of a traceback at start-up
        logger.error("cannot start the search service: %s", error)
        return 2
    run_server(app, config.host, config.port, config.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
