"""The scale-out store: pages as Qdrant points with two named vectors, searched with Qdrant's ColPali recipe.

One point per page, id = uuid5 of the page id, payload {page_id, doc_stem}, and two vectors:
- "mv": the page's multivectors (MAX_SIM comparator, dot product), without an HNSW graph (`m=0`): they are only
  ever scanned (recipe "exact") or used to rerank a candidate set (recipe "prefetch");
- "mean": the page's mean vector, L2-normalized (dot product), HNSW-indexed: the prefetch's candidates.

Recipes (store option "recipe"): "exact" scores every page by MaxSim; "prefetch" (default) takes the
`prefetch_limit` pages whose mean vector is nearest to the query's normalized mean vector, then ranks those by
MaxSim. Returned scores are exact MaxSim scores in both; only the candidate set of "prefetch" is approximate.

The same code talks to qdrant-client's local mode (`path=...` or `location=":memory:"`) and to a Qdrant server or
cluster (`url=...`, API key from the QDRANT_API_KEY environment variable). The index manifest stays the commit
record: points that a killed ingest wrote before its manifest commit are not in the manifest and are dropped from
results, and re-ingesting overwrites them.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import numpy as np

from search_engine.manifest import SearchIndexError

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "pages"
MULTIVECTOR = "mv"
MEAN_VECTOR = "mean"
RECIPES = ("prefetch", "exact")
DEFAULT_RECIPE = "prefetch"
DEFAULT_PREFETCH_LIMIT = 512  # candidate pages the "prefetch" recipe reranks by MaxSim, per query
ORPHAN_MARGIN = 16  # extra hits fetched so that dropping uncommitted points still leaves k
_POINT_NAMESPACE = uuid.UUID("6f1d3c1e-3b8a-4d8e-9b7a-2f0c5d4e1a90")


class QdrantLayoutError(SearchIndexError):
    """The collection was written by an earlier version of this store (one unnamed multivector per page)."""


def point_id(page_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, page_id))


def normalized_mean(vectors: np.ndarray) -> np.ndarray:
    """The mean of a page's (or a query's) vectors, scaled to unit length (left as is when it is zero)."""
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else mean


def connect(options: dict[str, Any]):
    """A QdrantClient for store options {"url"} (server/cluster), {"path"} (local files) or {"location"}."""
    from qdrant_client import QdrantClient

    if options.get("url"):
        return QdrantClient(url=options["url"], api_key=os.environ.get("QDRANT_API_KEY"), timeout=60)
    if options.get("path"):
        return QdrantClient(path=str(options["path"]))
    return QdrantClient(location=options.get("location", ":memory:"))


class QdrantPageStore:
    """Pages of one index in one Qdrant collection.

    `recipe` and `prefetch_limit` choose how `search` queries (module docstring). `server` says that `client` talks
    to a Qdrant server or cluster (store option "url") rather than local mode; only there does a collection this
    store creates get `shards` and `replicas` (its `shard_number` and `replication_factor`; None leaves them to
    Qdrant) and a payload index on doc_stem, as local mode has neither.
    """

    def __init__(
        self,
        client,
        collection: str = DEFAULT_COLLECTION,
        recipe: str = DEFAULT_RECIPE,
        prefetch_limit: int = DEFAULT_PREFETCH_LIMIT,
        shards: int | None = None,
        replicas: int | None = None,
        server: bool = False,
    ):
        if recipe not in RECIPES:
            raise ValueError(f"Qdrant recipe must be one of {RECIPES}, got {recipe!r}")
        if prefetch_limit < 1:
            raise ValueError("Qdrant prefetch limit must be >= 1")
        self.client = client
        self.collection = collection
        self.recipe = recipe
        self.prefetch_limit = prefetch_limit
        self.shards = shards
        self.replicas = replicas
        self.server = server

    @classmethod
    def from_store_options(cls, client, options: dict[str, Any]) -> QdrantPageStore:
        """The store that a manifest's `store_options` describe."""
        return cls(
            client,
            collection=options.get("collection", DEFAULT_COLLECTION),
            recipe=options.get("recipe", DEFAULT_RECIPE),
            prefetch_limit=int(options.get("prefetch_limit", DEFAULT_PREFETCH_LIMIT)),
            shards=options.get("shards"),
            replicas=options.get("replicas"),
            server=bool(options.get("url")),
        )

    def ensure_collection(self, dim: int) -> None:
        if self.client.collection_exists(self.collection):
            self.check_layout()
            return
        self.client.create_collection(self.collection, vectors_config=self._vectors_config(dim), **self._placement())
        if self.server:
            from qdrant_client import models

            self.client.create_payload_index(self.collection, "doc_stem", models.PayloadSchemaType.KEYWORD)

    def _vectors_config(self, dim: int) -> dict[str, Any]:
        from qdrant_client import models

        return {
            MULTIVECTOR: models.VectorParams(
                size=dim,
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                hnsw_config=models.HnswConfigDiff(m=0),
            ),
            MEAN_VECTOR: models.VectorParams(size=dim, distance=models.Distance.DOT),
        }

    def _placement(self) -> dict[str, int]:
        """create_collection's shard and replica arguments: a server's only."""
        placement = {
            key: value
            for key, value in (("shard_number", self.shards), ("replication_factor", self.replicas))
            if value is not None
        }
        if placement and not self.server:
            logger.info("Qdrant local mode has no shards or replicas: %s ignored", placement)
            return {}
        return placement

    def check_layout(self) -> None:
        """Raises QdrantLayoutError unless the collection has the named vectors this store writes and queries."""
        vectors = self.client.get_collection(self.collection).config.params.vectors
        if not isinstance(vectors, dict) or not {MULTIVECTOR, MEAN_VECTOR} <= vectors.keys():
            raise QdrantLayoutError(
                f"Qdrant collection {self.collection!r} holds pages in an older layout (one unnamed multivector per "
                f"page, not the named vectors {MULTIVECTOR!r} and {MEAN_VECTOR!r}): re-ingest the documents into a "
                f"new --index_dir, with a new --qdrant_collection name or after deleting {self.collection!r}"
            )

    def upsert_pages(self, page_ids: list[str], doc_stems: list[str], page_vectors: list[np.ndarray]) -> None:
        from qdrant_client import models

        points = [
            models.PointStruct(
                id=point_id(page_id),
                vector={
                    MULTIVECTOR: np.asarray(vectors, dtype=np.float32).tolist(),
                    MEAN_VECTOR: normalized_mean(vectors).tolist(),
                },
                payload={"page_id": page_id, "doc_stem": stem},
            )
            for page_id, stem, vectors in zip(page_ids, doc_stems, page_vectors, strict=True)
        ]
        self.client.upsert(self.collection, points=points, wait=True)

    def delete_documents(self, doc_stems: list[str]) -> None:
        from qdrant_client import models

        if not doc_stems or not self.client.collection_exists(self.collection):
            return
        selector = models.FilterSelector(
            filter=models.Filter(must=[models.FieldCondition(key="doc_stem", match=models.MatchAny(any=doc_stems))])
        )
        self.client.delete(self.collection, points_selector=selector, wait=True)

    def _request(self, query: np.ndarray, limit: int):
        """One query of the store's recipe, returning up to `limit` points ranked by exact MaxSim."""
        from qdrant_client import models

        multivector = np.asarray(query, dtype=np.float32).tolist()
        if self.recipe == "exact":
            return models.QueryRequest(
                query=multivector,
                using=MULTIVECTOR,
                # Local mode always scans (and warns about search params); a server is told to scan.
                params=models.SearchParams(exact=True) if self.server else None,
                limit=limit,
                with_payload=["page_id"],
            )
        # The prefetch bounds what the rerank can return, so it fetches at least `limit` candidates.
        candidates = models.Prefetch(
            query=normalized_mean(query).tolist(), using=MEAN_VECTOR, limit=max(self.prefetch_limit, limit)
        )
        return models.QueryRequest(
            prefetch=[candidates], query=multivector, using=MULTIVECTOR, limit=limit, with_payload=["page_id"]
        )

    def search(
        self, queries: list[np.ndarray], k: int, page_index: dict[str, int]
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Top-k (index, score) per query; points unknown to the manifest (`page_index`) are dropped."""
        requests = [self._request(q, k + ORPHAN_MARGIN) for q in queries]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        indices, scores = [], []
        for response in responses:
            hits = [(page_index.get(p.payload["page_id"]), float(p.score)) for p in response.points]
            hits = [(i, s) for i, s in hits if i is not None]
            hits = sorted(hits, key=lambda hit: (-hit[1], hit[0]))[:k]
            indices.append([i for i, _ in hits])
            scores.append([s for _, s in hits])
        return indices, scores
