"""A search service on loopback with fixed results per query, speaking the service contract (docs/search.md, Service):
`POST /search`, `GET /search`, `GET /health`, `GET /image/{page_id}`. Tests and benchmarks of stages above search
(evaluation, synthesis) use it where the ranking must be known exactly; unknown queries get no hits.

Page images are written to `pages_dir` as `{page_id}.png`; hits name those files, so a client on the same machine
loads them from disk as it does with the real service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import BaseModel

from unidoc_rl.standins.serving import ThreadedUvicorn


class _SearchBody(BaseModel):
    queries: list[str]
    top_k: int | None = None


class StaticSearchServer:
    def __init__(self, pages: dict[str, Image.Image], results: dict[str, list[str]], pages_dir: Path):
        missing = sorted({page_id for ids in results.values() for page_id in ids} - set(pages))
        if missing:
            raise ValueError(f"results name pages that do not exist: {missing}")
        self.results = dict(results)
        self.pages_dir = Path(pages_dir)
        self.pages_dir.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, Path] = {}
        for page_id, image in pages.items():
            path = self.pages_dir / f"{page_id}.png"
            image.save(path)
            self.files[page_id] = path
        self.index = {page_id: position for position, page_id in enumerate(sorted(pages))}
        self.queries: list[str] = []
        self._server = ThreadedUvicorn(self._build_app())

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> StaticSearchServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> StaticSearchServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _hits(self, query: str, top_k: int | None) -> list[dict]:
        ranked = self.results.get(query, [])[: top_k or None]
        return [
            {"idx": self.index[pid], "image_file": str(self.files[pid]), "page_id": pid, "score": 1.0 / (rank + 1)}
            for rank, pid in enumerate(ranked)
        ]

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="static search service")

        @app.post("/search")
        async def search_post(body: _SearchBody) -> dict:
            self.queries.extend(body.queries)
            return {"results": [self._hits(query, body.top_k) for query in body.queries]}

        @app.get("/search")
        async def search_get(queries: Annotated[list[str], Query()], top_k: int | None = None) -> list:
            self.queries.extend(queries)
            return [self._hits(query, top_k) for query in queries]

        @app.get("/health")
        async def health() -> dict:
            return {"status": "ok", "pages": len(self.files), "backend": "static", "model": None}

        @app.get("/image/{page_id}")
        async def image(page_id: str) -> FileResponse:
            if page_id not in self.files:
                raise HTTPException(status_code=404, detail=f"no image for page id {page_id!r}")
            return FileResponse(self.files[page_id], media_type="image/png")

        return app
