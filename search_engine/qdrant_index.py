"""The scale-out store: pages as Qdrant multivector points (MAX_SIM comparator, dot product).

One point per page, id = uuid5 of the page id, payload {page_id, doc_stem}. The same code talks to qdrant-client's
local mode (`path=...` or `location=":memory:"`) and to a Qdrant server or cluster (`url=...`, API key from the
QDRANT_API_KEY environment variable). The index manifest stays the commit record: points that a killed ingest wrote
before its manifest commit are not in the manifest and are dropped from results, and re-ingesting overwrites them.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np

DEFAULT_COLLECTION = "pages"
ORPHAN_MARGIN = 16  # extra hits fetched so that dropping uncommitted points still leaves k
_POINT_NAMESPACE = uuid.UUID("6f1d3c1e-3b8a-4d8e-9b7a-2f0c5d4e1a90")


def point_id(page_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, page_id))


def connect(options: dict[str, Any]):
    """A QdrantClient for store options {"url"} (server/cluster), {"path"} (local files) or {"location"}."""
    from qdrant_client import QdrantClient

    if options.get("url"):
        return QdrantClient(url=options["url"], api_key=os.environ.get("QDRANT_API_KEY"), timeout=60)
    if options.get("path"):
        return QdrantClient(path=str(options["path"]))
    return QdrantClient(location=options.get("location", ":memory:"))


class QdrantPageStore:
    def __init__(self, client, collection: str = DEFAULT_COLLECTION):
        self.client = client
        self.collection = collection
        self._local = type(getattr(client, "_client", None)).__name__ == "QdrantLocal"

    def ensure_collection(self, dim: int) -> None:
        from qdrant_client import models

        if self.client.collection_exists(self.collection):
            return
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(
                size=dim,
                distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            ),
        )
        if not self._local:
            self.client.create_payload_index(self.collection, "doc_stem", models.PayloadSchemaType.KEYWORD)

    def upsert_pages(self, page_ids: list[str], doc_stems: list[str], page_vectors: list[np.ndarray]) -> None:
        from qdrant_client import models

        points = [
            models.PointStruct(
                id=point_id(page_id),
                vector=np.asarray(vectors, dtype=np.float32).tolist(),
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

    def search(
        self, queries: list[np.ndarray], k: int, page_index: dict[str, int]
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Top-k (index, score) per query; points unknown to the manifest (`page_index`) are dropped."""
        from qdrant_client import models

        requests = [
            models.QueryRequest(
                query=np.asarray(q, dtype=np.float32).tolist(), limit=k + ORPHAN_MARGIN, with_payload=["page_id"]
            )
            for q in queries
        ]
        responses = self.client.query_batch_points(self.collection, requests=requests)
        indices, scores = [], []
        for response in responses:
            hits = [(page_index.get(p.payload["page_id"]), float(p.score)) for p in response.points]
            hits = [(i, s) for i, s in hits if i is not None]
            hits = sorted(hits, key=lambda hit: (-hit[1], hit[0]))[:k]
            indices.append([i for i, _ in hits])
            scores.append([s for _, s in hits])
        return indices, scores
