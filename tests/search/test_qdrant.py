"""The Qdrant store (qdrant-client local mode) against the embedded store on the same vectors: the exact recipe
returns the same top-k, the prefetch recipe the same top-k when it prefetches every page and exact scores on a
pruned candidate set; collections of the old layout are refused; shards and replicas reach a server only."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from search_engine.ingestion import IngestConfig, build_parser, ingest
from search_engine.manifest import Manifest, ShardEntry, read_manifest, write_manifest
from search_engine.qdrant_index import MEAN_VECTOR, MULTIVECTOR, QdrantLayoutError, QdrantPageStore, point_id
from search_engine.searcher import IndexSnapshot, Searcher, SearchSettings
from search_engine.shards import write_vector_shard

DIM = 16


def _embedded_index(index_dir: Path, page_ids: list[str], pages: list[np.ndarray]) -> Manifest:
    manifest = Manifest(backend="colqwen", model="m", dim=DIM)
    manifest.shards.append(write_vector_shard(index_dir, "shard-000000", page_ids, pages, None))
    write_manifest(index_dir, manifest)
    return manifest


def _qdrant_manifest(page_ids: list[str], pages: list[np.ndarray], store_options: dict) -> Manifest:
    shard = ShardEntry(name="shard-000000", page_ids=page_ids, token_counts=[p.shape[0] for p in pages])
    return Manifest(backend="colqwen", model="m", dim=DIM, store="qdrant", store_options=store_options, shards=[shard])


def _stems(page_ids: list[str]) -> list[str]:
    return [p.rsplit("_", 1)[0] for p in page_ids]


def _maxsim(query: np.ndarray, page: np.ndarray) -> float:
    return float((query.astype(np.float32) @ page.astype(np.float32).T).max(axis=1).sum())


def test_exact_recipe_matches_the_embedded_store(tmp_path: Path, make_pages):
    from qdrant_client import QdrantClient

    rng = np.random.default_rng(7)
    lengths = [int(n) for n in rng.integers(3, 12, size=30)]
    pages = make_pages(rng, lengths, DIM)
    page_ids = [f"doc{i // 3}_{i % 3 + 1}" for i in range(len(pages))]
    stems = _stems(page_ids)
    embedded = _embedded_index(tmp_path / "embedded", page_ids, pages)

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    store = QdrantPageStore(client, "pages")
    store.ensure_collection(DIM)
    # Written in two batches with an orphan point that no manifest names (as a killed ingest would leave).
    store.upsert_pages(page_ids[:10], stems[:10], pages[:10])
    store.upsert_pages(page_ids[10:] + ["ghost_1"], stems[10:] + ["ghost"], pages[10:] + [pages[0] * 2])
    qdrant = _qdrant_manifest(page_ids, pages, {"collection": "pages", "recipe": "exact"})

    queries = [rng.standard_normal((n, DIM)).astype(np.float32) for n in (4, 9, 1)]
    settings = SearchSettings()
    ours = IndexSnapshot(tmp_path / "embedded", tmp_path / "pages", embedded, settings).search_vectors(queries, 5)
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


TOPICS = 20
TOPIC_TOKENS = 8
PAGES = 200
QUERIES = 40
K = 10
PRUNING_PREFETCH = 64  # of 200 pages: the rerank sees a third of them


def _topical_corpus(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """ColQwen-shaped pages that carry structure for a mean vector to find: each page draws most of its 10-30
    unit vectors from one of 20 topics' token prototypes (plus noise) and the rest from random other topics; each
    query takes 3-8 noisy vectors of one page's topic."""
    prototypes = rng.standard_normal((TOPICS, TOPIC_TOKENS, DIM)).astype(np.float32)

    def unit_rows(rows: np.ndarray) -> np.ndarray:
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def tokens(topics: np.ndarray, noise: float) -> np.ndarray:
        chosen = prototypes[topics, rng.integers(0, TOPIC_TOKENS, size=len(topics))]
        return unit_rows(chosen + noise * rng.standard_normal(chosen.shape).astype(np.float32))

    page_topics = rng.integers(0, TOPICS, size=PAGES)
    pages = []
    for topic in page_topics:
        length = int(rng.integers(10, 31))
        topics = np.where(rng.random(length) < 0.7, topic, rng.integers(0, TOPICS, size=length))
        pages.append(tokens(topics, 0.5).astype(np.float16))
    queries = [
        tokens(np.full(int(rng.integers(3, 9)), page_topics[rng.integers(0, PAGES)]), 0.7) for _ in range(QUERIES)
    ]
    return pages, queries


def test_prefetch_recipe_reranks_its_candidates_by_exact_maxsim(tmp_path: Path):
    from qdrant_client import QdrantClient

    rng = np.random.default_rng(11)
    pages, queries = _topical_corpus(rng)
    page_ids = [f"doc{i // 4}_{i % 4 + 1}" for i in range(PAGES)]
    embedded = _embedded_index(tmp_path / "embedded", page_ids, pages)
    exact = IndexSnapshot(tmp_path / "embedded", tmp_path / "pages", embedded, SearchSettings())
    expected = exact.search_vectors(queries, K)

    client = QdrantClient(path=str(tmp_path / "qdrant"))
    store = QdrantPageStore(client, "pages")
    store.ensure_collection(DIM)
    store.upsert_pages(page_ids, _stems(page_ids), pages)

    def prefetch_search(limit: int):
        options = {"collection": "pages", "recipe": "prefetch", "prefetch_limit": limit}
        manifest = _qdrant_manifest(page_ids, pages, options)
        snapshot = IndexSnapshot(tmp_path, tmp_path / "pages", manifest, SearchSettings(), qdrant_client=client)
        return snapshot.search_vectors(queries, K)

    # Prefetching every page leaves the rerank nothing to miss: the exact top-k.
    for mine, remote in zip(expected, prefetch_search(PAGES), strict=True):
        assert [h.page_id for h in remote] == [h.page_id for h in mine]
        assert [h.score for h in remote] == pytest.approx([h.score for h in mine], abs=1e-3)

    # A pruning prefetch may miss pages of the exact top-k, but every score it returns is the page's exact MaxSim.
    pruned = prefetch_search(PRUNING_PREFETCH)
    found = 0
    for query, mine, remote in zip(queries, expected, pruned, strict=True):
        assert len(remote) == K
        for hit in remote:
            assert hit.score == pytest.approx(_maxsim(query, pages[hit.idx]), abs=1e-3)
        found += len({h.page_id for h in remote} & {h.page_id for h in mine})
    recall = found / (K * QUERIES)
    assert recall >= 0.83, recall  # 0.865 measured (qdrant-client 1.20 local mode; 0.7275 with a prefetch of 32)
    client.close()


class RecordingClient:
    """A QdrantClient (local mode underneath) that records the keyword arguments of every create_collection."""

    def __init__(self, client):
        self.client = client
        self.created: list[dict] = []

    def create_collection(self, collection_name: str, **kwargs):
        self.created.append(kwargs)
        return self.client.create_collection(collection_name, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.client, name)


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_shards_and_replicas_reach_a_server_only(caplog):
    from qdrant_client import QdrantClient

    placement = {"shards": 4, "replicas": 2}
    server = RecordingClient(QdrantClient(location=":memory:"))
    QdrantPageStore.from_store_options(server, {"url": "http://qdrant-node:6333", **placement}).ensure_collection(DIM)
    (created,) = server.created
    assert (created["shard_number"], created["replication_factor"]) == (4, 2)
    vectors = created["vectors_config"]
    assert vectors[MULTIVECTOR].hnsw_config.m == 0 and vectors[MULTIVECTOR].multivector_config is not None
    assert vectors[MEAN_VECTOR].hnsw_config is None and vectors[MEAN_VECTOR].multivector_config is None

    local = RecordingClient(QdrantClient(location=":memory:"))
    with caplog.at_level(logging.INFO, logger="search_engine.qdrant_index"):
        QdrantPageStore.from_store_options(local, {"location": ":memory:", **placement}).ensure_collection(DIM)
    (created,) = local.created
    assert "shard_number" not in created and "replication_factor" not in created
    assert "local mode has no shards or replicas" in caplog.text


class PixelEncoder:
    """A stand-in for ColQwen: a page's vectors are the rows of its grey image shrunk to 6 x DIM (unit length); a
    query's are drawn from a generator seeded by its length."""

    model_name = "pixel-stand-in"
    fingerprint = None
    dim = DIM

    def embed_images(self, images) -> list[np.ndarray]:
        rows = [np.asarray(image.convert("L").resize((DIM, 6)), dtype=np.float32) + 1.0 for image in images]
        return [(r / np.linalg.norm(r, axis=1, keepdims=True)).astype(np.float16) for r in rows]

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        return [np.random.default_rng(len(q)).standard_normal((4, DIM)).astype(np.float32) for q in queries]


def _one_pdf_corpus(make_pdf, folder: Path) -> Path:
    make_pdf(folder / "report.pdf", ["Revenue in Asia.", "A table of costs.", "Battery cycles."])
    return folder


def test_ingestion_records_the_qdrant_options_in_the_manifest(tmp_path: Path, make_pdf):
    help_text = build_parser().format_help()
    assert all(flag in help_text for flag in ("--qdrant_recipe", "--qdrant_prefetch", "--qdrant_shards"))
    config = IngestConfig(
        dataset_dir=_one_pdf_corpus(make_pdf, tmp_path / "corpus"), backend="colqwen", model="m", dpi=72,
        store="qdrant", progress=False, qdrant_recipe="exact", qdrant_prefetch=64, qdrant_shards=3,
    )  # fmt: skip
    ingest(config, encoder=PixelEncoder())
    options = read_manifest(config.index_dir).store_options
    assert {k: options[k] for k in ("collection", "recipe", "prefetch_limit", "shards")} == {
        "collection": "pages", "recipe": "exact", "prefetch_limit": 64, "shards": 3,
    }  # fmt: skip
    hits = Searcher(config.index_dir, config.pages_dir, encoder=PixelEncoder()).search(["revenue"], 3)[0]
    assert sorted(h.page_id for h in hits) == ["report_1", "report_2", "report_3"]


def _old_layout_collection(client, name: str) -> None:
    """A collection as the store wrote it before the named vectors: one unnamed MaxSim multivector per page."""
    from qdrant_client import models

    multivector = models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM)
    params = models.VectorParams(size=DIM, distance=models.Distance.DOT, multivector_config=multivector)
    client.create_collection(name, vectors_config=params)
    point = models.PointStruct(id=point_id("a_1"), vector=[[1.0] * DIM], payload={"page_id": "a_1", "doc_stem": "a"})
    client.upsert(name, points=[point], wait=True)


def test_a_collection_of_the_old_layout_is_refused(tmp_path: Path, make_pages, make_pdf):
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    _old_layout_collection(client, "legacy")
    manifest = _qdrant_manifest(["a_1"], make_pages(np.random.default_rng(0), [3], DIM), {"collection": "legacy"})
    with pytest.raises(QdrantLayoutError, match=r"'legacy'.*re-ingest"):
        IndexSnapshot(tmp_path, tmp_path / "pages", manifest, SearchSettings(), qdrant_client=client)

    config = IngestConfig(
        dataset_dir=_one_pdf_corpus(make_pdf, tmp_path / "corpus"), backend="colqwen", model="m", dpi=72,
        store="qdrant", qdrant_collection="legacy", progress=False,
    )  # fmt: skip
    with pytest.raises(QdrantLayoutError, match=r"'legacy'.*re-ingest"):
        ingest(config, encoder=PixelEncoder(), qdrant_client=client)
    assert client.count("legacy").count == 1
