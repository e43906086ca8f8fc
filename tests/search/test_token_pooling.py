"""Index-time token pooling: colpali-engine's hierarchical pooler through pooling.pool_tokens, and ingestion storing
the pooled pages when the index was created with --token_pool_factor."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from search_engine.corpus import RenderedPage
from search_engine.ingestion import IngestConfig, _IndexWriter, _new_manifest, _PendingDocument
from search_engine.manifest import DocumentEntry, read_manifest, write_manifest
from search_engine.pooling import pool_tokens
from search_engine.shards import load_vectors

DIM = 16


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_pairs_of_equal_vectors_pool_to_one_vector_each():
    rng = np.random.default_rng(0)
    base = _unit(rng.standard_normal((3, DIM))).astype(np.float32)
    # Each base vector twice, slightly perturbed: factor 2 keeps 3 clusters, each the normalized mean of a pair.
    page = np.repeat(base, 2, axis=0) + 1e-3 * rng.standard_normal((6, DIM)).astype(np.float32)
    single = rng.standard_normal((1, DIM)).astype(np.float16)
    pooled, kept = pool_tokens([page, single], 2)
    assert pooled.shape == (3, DIM) and pooled.dtype == np.float16
    expected = _unit(page.reshape(3, 2, DIM).mean(axis=1))
    distance = np.abs(pooled.astype(np.float32)[:, None, :] - expected[None]).max(axis=2)
    assert sorted(distance.argmin(axis=1).tolist()) == [0, 1, 2] and distance.min(axis=1).max() < 2e-3
    np.testing.assert_array_equal(kept, single)  # a page of one vector has nothing to pool
    assert pool_tokens([page], 1)[0] is page
    assert pool_tokens([rng.standard_normal((9, DIM))], 3)[0].shape == (3, DIM)
    with pytest.raises(ValueError, match="token pool factor must be >= 1"):
        pool_tokens([page], 0)


def test_ingestion_stores_pooled_pages_and_records_the_factor(tmp_path: Path):
    config = IngestConfig(
        dataset_dir=tmp_path, backend="colqwen", model="stand-in", token_pool_factor=2, pool_size=4, progress=False
    )
    manifest = _new_manifest(config, SimpleNamespace(model_name="stand-in", fingerprint=None, dim=DIM))
    write_manifest(config.index_dir, manifest)
    rng = np.random.default_rng(1)
    vectors = [_unit(rng.standard_normal((n, DIM))).astype(np.float16) for n in (10, 7)]
    entry = DocumentEntry(doc_stem="doc", source="doc.pdf", content_hash="0", num_pages=2, shard="")
    pages = [RenderedPage(f"doc_{i + 1}", "doc", i + 1, tmp_path / f"doc_{i + 1}.png", "") for i in range(2)]
    _IndexWriter(config, manifest).append([_PendingDocument(entry=entry, pages=pages, vectors=vectors)], {})

    stored = read_manifest(config.index_dir)
    assert stored.settings["token_pool_factor"] == 2
    assert stored.shards[0].token_counts == [5, 3]  # 10 // 2 and 7 // 2 vectors
    expected = np.concatenate(pool_tokens(vectors, 2))
    np.testing.assert_array_equal(np.asarray(load_vectors(config.index_dir, stored.shards[0], DIM)), expected)
    with pytest.raises(ValueError, match="token_pool_factor must be >= 1"):
        IngestConfig(dataset_dir=tmp_path, backend="colqwen", model="m", token_pool_factor=0)
