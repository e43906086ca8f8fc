"""Pooled centroids and the approximate mode's recall/speed knob (shortlist size), on a small synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from search_engine.manifest import Manifest, write_manifest
from search_engine.pooling import kmeans_centroids, pool_pages
from search_engine.shards import write_vector_shard
from search_engine.vector_index import EmbeddedVectorIndex

DIM = 32
PAGES = 120
TOKENS = 40


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_centroids_sit_at_their_members_mean_norm():
    # Two vectors of norm 2, 37 degrees apart: their mean is shorter (1.98); the centroid keeps norm 2.
    tokens = torch.tensor([[[1.2, 1.6], [1.6, 1.2]]])
    centroid = kmeans_centroids(tokens, pool_size=1)
    np.testing.assert_allclose(centroid.numpy(), [[[np.sqrt(2), np.sqrt(2)]]], atol=1e-6)
    # Tight clusters of unit vectors: one unit-length centroid per cluster, on the cluster's direction.
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.6, 0.8])
    page = np.stack([a, a, _unit(a + [0, 0.01, 0]), b, b]).astype(np.float16)
    pooled = pool_pages(page, [5], pool_size=2)
    assert pooled.shape == (1, 2, 3) and pooled.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(pooled[0].astype(np.float32), axis=1), [1.0, 1.0], atol=1e-3)
    np.testing.assert_allclose(sorted(pooled[0].astype(np.float32) @ b), [0.0, 1.0], atol=5e-3)


@pytest.fixture(scope="module")
def topic_corpus(tmp_path_factory) -> tuple[EmbeddedVectorIndex, list[np.ndarray], np.ndarray]:
    """Pages in topics of 6 sharing concepts, half background vectors; queries are noisy concepts of one page."""
    rng = np.random.default_rng(7)
    topics = _unit(rng.standard_normal((PAGES // 6, 16, DIM)))
    background = _unit(rng.standard_normal((4, DIM)))
    pages, concepts = [], []
    for page in range(PAGES):
        own = np.concatenate([topics[page // 6][rng.permutation(16)[:6]], _unit(rng.standard_normal((2, DIM)))])
        content = own[rng.integers(0, 8, TOKENS // 2)] + 0.3 * rng.standard_normal((TOKENS // 2, DIM)) / np.sqrt(DIM)
        blank = background[rng.integers(0, 4, TOKENS // 2)] + 0.1 * rng.standard_normal((TOKENS // 2, DIM))
        pages.append(_unit(np.concatenate([blank, content])).astype(np.float16))
        concepts.append(own)
    targets = rng.integers(0, PAGES, 12)
    queries = [
        _unit(concepts[t][rng.integers(0, 8, 8)] + 0.5 * rng.standard_normal((8, DIM)) / np.sqrt(DIM)).astype(
            np.float32
        )
        for t in targets
    ]
    index_dir = tmp_path_factory.mktemp("approx_index")
    manifest = Manifest(backend="colqwen", model="test-model", dim=DIM, settings={"pool_size": 8})
    for number, start in enumerate(range(0, PAGES, 50)):
        shard_pages = pages[start : start + 50]
        pooled = pool_pages(np.concatenate(shard_pages), [TOKENS] * len(shard_pages), pool_size=8)
        ids = [f"doc{i // 6}_{i % 6 + 1}" for i in range(start, start + len(shard_pages))]
        manifest.shards.append(write_vector_shard(index_dir, f"shard-{number:06d}", ids, shard_pages, pooled))
    write_manifest(index_dir, manifest)
    return EmbeddedVectorIndex(index_dir, manifest, num_threads=2), queries, targets


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(approx, exact, strict=True)]))


def test_shortlist_size_trades_recall_for_work(topic_corpus):
    index, queries, targets = topic_corpus
    exact_idx, exact_scores = index.exact(queries, 10)
    assert exact_idx[:, 0].tolist() == targets.tolist()
    recalls = {}
    for candidates in (10, 20, 40, 60, PAGES):
        approx_idx, approx_scores = index.approx(queries, 10, candidates=candidates)
        recalls[candidates] = _recall(approx_idx, exact_idx)
        # Returned scores are exact MaxSim whatever the shortlist: a page found by both has the same score.
        for row in range(len(queries)):
            exact_of = dict(zip(exact_idx[row].tolist(), exact_scores[row].tolist(), strict=True))
            for page, score in zip(approx_idx[row].tolist(), approx_scores[row].tolist(), strict=True):
                if page in exact_of:
                    assert score == pytest.approx(exact_of[page], abs=1e-5)
    # Measured: 0.65, 0.79, 0.89, 0.975, 1.0 (the exact top 10 has near-ties that only exact scoring separates).
    assert recalls[10] < recalls[20] < recalls[40] < recalls[60] <= recalls[PAGES] == 1.0
    assert recalls[10] < 0.75 and recalls[60] >= 0.95
    # The first stage alone already ranks each query's own page first or close to it.
    shortlist = index.shortlist(np.stack(queries), 3)
    assert all(t in row for t, row in zip(targets.tolist(), shortlist.tolist(), strict=True))
