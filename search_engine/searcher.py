"""Query an index: text queries in, SearchHits out, over whichever backend and store the manifest names.

`Searcher` is what the service holds. It re-reads the manifest when the file changes (an ingest committed) and
swaps in a new `IndexSnapshot`; every search runs against one snapshot from start to end, so concurrent searches
see the old index or the new one, never a mix.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search_engine.bm25_index import Bm25Index
from search_engine.corpus import PAGES_DIRNAME
from search_engine.ivf import DEFAULT_PREFILTER, DEFAULT_PROBE
from search_engine.manifest import Manifest, manifest_path, read_manifest
from search_engine.maxsim import DEFAULT_RESIDENCY, RESIDENCY_MODES
from search_engine.residuals import DEFAULT_NBITS, NBITS_CHOICES
from search_engine.shards import load_texts
from search_engine.types import SearchHit
from search_engine.vector_index import DEFAULT_CANDIDATES, SEARCH_MODES, EmbeddedVectorIndex

logger = logging.getLogger(__name__)

_OPEN_ATTEMPTS = 5


@dataclass(frozen=True)
class SearchSettings:
    mode: str = "exact"
    candidates: int = DEFAULT_CANDIDATES
    # Inverted lists (indexes with a codebook, ivf.py): centroids probed per query vector, pages passed on.
    probe: int = DEFAULT_PROBE
    prefilter: int = DEFAULT_PREFILTER
    # Bits per dimension of the lists' residuals (residuals.py): 2 keeps 32 bytes per pooled vector of 128 dims.
    residual_bits: int = DEFAULT_NBITS
    num_threads: int | None = None
    verify_checksums: bool = False
    residency: str = DEFAULT_RESIDENCY

    def __post_init__(self) -> None:
        if self.mode not in SEARCH_MODES:
            raise ValueError(f"search mode must be one of {SEARCH_MODES}, got {self.mode!r}")
        if self.residency not in RESIDENCY_MODES:
            raise ValueError(f"residency must be one of {RESIDENCY_MODES}, got {self.residency!r}")
        if self.candidates < 1:
            raise ValueError("candidates must be >= 1")
        if self.probe < 1 or self.prefilter < 1:
            raise ValueError("probe and prefilter must be >= 1")
        if self.residual_bits not in NBITS_CHOICES:
            raise ValueError(f"residual_bits must be one of {NBITS_CHOICES}, got {self.residual_bits}")


class IndexSnapshot:
    """One committed version of an index, opened for searching."""

    def __init__(
        self,
        index_dir: Path,
        pages_dir: Path,
        manifest: Manifest,
        settings: SearchSettings,
        encoder: Any = None,
        qdrant_client: Any = None,
    ):
        self.manifest = manifest
        self.settings = settings
        self.page_ids = manifest.page_ids()
        self.page_index = {page_id: i for i, page_id in enumerate(self.page_ids)}
        self.pages_dir = Path(pages_dir).resolve()
        self._encoder = encoder
        self._vectors: EmbeddedVectorIndex | None = None
        self._bm25: Bm25Index | None = None
        self._qdrant = None
        if manifest.backend == "bm25":
            texts = [
                text for shard in manifest.shards for text in load_texts(index_dir, shard, settings.verify_checksums)
            ]
            self._bm25 = Bm25Index(texts, **manifest.settings.get("bm25", {}))
        elif manifest.store == "qdrant":
            from search_engine.qdrant_index import QdrantPageStore, connect

            client = qdrant_client if qdrant_client is not None else connect(manifest.store_options)
            self._qdrant = QdrantPageStore.from_store_options(client, manifest.store_options)
            self._qdrant.check_layout()
        else:
            self._vectors = EmbeddedVectorIndex(
                index_dir,
                manifest,
                settings.num_threads,
                settings.verify_checksums,
                settings.residency,
                residual_bits=settings.residual_bits,
            )
            if settings.mode == "approx" and not self._vectors.supports_approx:
                raise ValueError(f"{index_dir}: no pooled vectors for approx mode; re-ingest with --pool_size > 0")

    @property
    def num_pages(self) -> int:
        return len(self.page_ids)

    def image_file(self, page_id: str) -> Path | None:
        """The page image for a page id of this index; None for an unknown id (never a path from user input)."""
        if page_id not in self.page_index:
            return None
        return self.pages_dir / f"{self.page_ids[self.page_index[page_id]]}.png"

    def search_vectors(self, embeddings: list[np.ndarray], top_k: int) -> list[list[SearchHit]]:
        if self.num_pages == 0:
            return [[] for _ in embeddings]
        if self._qdrant is not None:
            indices, scores = self._qdrant.search(embeddings, top_k, self.page_index)
        elif self.settings.mode == "approx":
            indices, scores = self._vectors.approx(
                embeddings, top_k, self.settings.candidates, self.settings.probe, self.settings.prefilter
            )
        else:
            indices, scores = self._vectors.exact(embeddings, top_k)
        return self._hits(indices, scores)

    def search(self, queries: list[str], top_k: int) -> list[list[SearchHit]]:
        if self._bm25 is not None:
            indices, scores = self._bm25.search(queries, top_k)
            return self._hits(indices, scores)
        if self._encoder is None:
            raise RuntimeError("this index needs a query encoder (the model that embedded it)")
        return self.search_vectors(self._encoder.embed_queries(queries), top_k)

    def _hits(self, indices, scores) -> list[list[SearchHit]]:
        results = []
        for row_indices, row_scores in zip(indices, scores, strict=True):
            results.append(
                [
                    SearchHit(
                        idx=int(i),
                        image_file=str(self.pages_dir / f"{self.page_ids[int(i)]}.png"),
                        page_id=self.page_ids[int(i)],
                        score=float(s),
                    )
                    for i, s in zip(row_indices, row_scores, strict=True)
                ]
            )
        return results


def _manifest_signature(index_dir: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(manifest_path(index_dir))
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class Searcher:
    """Thread-safe searching over an index directory that an ingest may be updating."""

    def __init__(
        self,
        index_dir: Path,
        pages_dir: Path | None = None,
        backend: str | None = None,
        model: str | None = None,
        settings: SearchSettings = SearchSettings(),
        encoder: Any = None,
        qdrant_client: Any = None,
        encoder_options: dict[str, Any] | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.pages_dir = Path(pages_dir) if pages_dir else self.index_dir.parent / PAGES_DIRNAME
        self.settings = settings
        self._backend = backend
        self._model = model
        self._encoder = encoder
        self._encoder_options = encoder_options or {}
        self._qdrant_client = qdrant_client
        self._lock = threading.Lock()
        self._snapshot: IndexSnapshot | None = None
        self._signature: tuple[int, int, int] | None = None
        self.snapshot()

    def _encoder_for(self, manifest: Manifest):
        if manifest.backend != "colqwen":
            return None
        if self._encoder is None:
            from search_engine.colqwen import ColQwenEncoder

            self._encoder = ColQwenEncoder(self._model or manifest.model, **self._encoder_options)
        manifest.check_compatible(model=self._encoder.model_name, model_fingerprint=self._encoder.fingerprint)
        return self._encoder

    def _open(self) -> tuple[IndexSnapshot, tuple[int, int, int] | None]:
        last_error: Exception | None = None
        for _ in range(_OPEN_ATTEMPTS):
            signature = _manifest_signature(self.index_dir)
            manifest = read_manifest(self.index_dir)
            manifest.check_compatible(backend=self._backend, model=self._model if self._encoder is None else None)
            if manifest.store == "qdrant" and self._qdrant_client is None:
                from search_engine.qdrant_index import connect

                # One client for the life of the service: local mode locks its folder per client.
                self._qdrant_client = connect(manifest.store_options)
            try:
                snapshot = IndexSnapshot(
                    self.index_dir,
                    self.pages_dir,
                    manifest,
                    self.settings,
                    encoder=self._encoder_for(manifest),
                    qdrant_client=self._qdrant_client,
                )
                return snapshot, signature
            except FileNotFoundError as error:
                # An ingest committed a newer manifest and removed a shard of the one read above: read again.
                last_error = error
        raise RuntimeError(f"{self.index_dir}: the index kept changing while it was opened ({last_error})")

    def snapshot(self) -> IndexSnapshot:
        """The current snapshot, reopened first if the manifest changed on disk."""
        signature = _manifest_signature(self.index_dir)
        if self._snapshot is not None and signature == self._signature:
            return self._snapshot
        with self._lock:
            if self._snapshot is None or _manifest_signature(self.index_dir) != self._signature:
                snapshot, opened_signature = self._open()
                if self._snapshot is not None:
                    logger.info(
                        "index %s reloaded: generation %d, %d pages",
                        self.index_dir,
                        snapshot.manifest.generation,
                        snapshot.num_pages,
                    )
                self._snapshot, self._signature = snapshot, opened_signature
            return self._snapshot

    def search(self, queries: list[str], top_k: int) -> list[list[SearchHit]]:
        return self.snapshot().search(queries, top_k)

    def health(self) -> dict[str, Any]:
        snapshot = self.snapshot()
        manifest = snapshot.manifest
        return {
            "status": "ok",
            "num_pages": snapshot.num_pages,
            "num_documents": len(manifest.documents),
            "backend": manifest.backend,
            "model": manifest.model,
            "dim": manifest.dim,
            "store": manifest.store,
            "mode": self.settings.mode if manifest.backend == "colqwen" else "bm25",
            "generation": manifest.generation,
        }
