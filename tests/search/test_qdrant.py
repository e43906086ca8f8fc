"""The Qdrant store (qdrant-client local mode) returns the same top-k as the embedded store on the same vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search_engine.manifest import Manifest, ShardEntry, write_manifest
from search_engine.qdrant_index import QdrantPageStore, point_id
from search_engine.searcher import IndexSnapshot, SearchSettings
from search_engine.shards import write_vector_shard

DIM = 16


def test_qdrant_local_mode_matches_the_embedded_store(tmp_path: Path, make_pages):
    from qdrant_client import QdrantClient

    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(3, 12, size=30)]
    pages = make_pages(rng, lengths, DIM)
    page_ids = [f"doc{i // 3}_{i % 3 + 1}" for i in range(len(pages))]
    stems = [p.rsplit("_", 1)[0] for p in page_ids]

    embedded_dir = tmp_path / "embedded"
    embedded = Manifest(backend="colqwen", model="m", dim=DIM)
    embedded.shards.append(write_vector_shard(embedded_dir, "shard-000000", page_ids, pages, None))
    write_manifest(embedded_dir, embedded)

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    store = QdrantPageStore(client, "pages")
    store.ensure_collection(DIM)
    # Written in two batches with an orphan point that no manifest names (as a killed ingest would leave).
    store.upsert_pages(page_ids[:10], stems[:10], pages[:10])
    store.upsert_pages(page_ids[10:] + ["ghost_1"], stems[10:] + ["ghost"], pages[10:] + [pages[0] * 2])
    qdrant = Manifest(
        backend="colqwen", model="m", dim=DIM, store="qdrant", store_options={"collection": "pages"},
        shards=[ShardEntry(name="shard-000000", page_ids=page_ids, token_counts=lengths)],
    )  # fmt: skip

    queries = [rng.standard_normal((n, DIM)).astype(np.float32) for n in (4, 9, 1)]
    settings = SearchSettings()
    ours = IndexSnapshot(embedded_dir, tmp_path / "pages", embedded, settings).search_vectors(queries, 5)
    theirs = IndexSnapshot(tmp_path, tmp_path / "pages", qdrant, settings, qdrant_client=client).search_vectors(
        queries, 5
    )
    for mine, remote in zip(ours, theirs, strict=True):
        assert [h.page_id for h in remote] == [h.page_id for h in mine]
        assert [h.idx for h in remote] == [h.idx for h in mine]
        assert [h.score for h in remote] == pytest.approx([h.score for h in mine], abs=1e-3)
    assert all("ghost_1" not in {h.page_id for h in hits} for hits in theirs)

    store.delete_documents(["doc0"])
    remaining = {p.id for p in client.scroll("pages", limit=100)[0]}
    assert point_id("doc0_1") not in remaining and point_id("doc1_1") in remaining
    client.close()
