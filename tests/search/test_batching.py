"""Batching of concurrent requests over real HTTP on loopback: concurrent requests are encoded and scored together,
each gets exactly what a one-at-a-time search returns, and a bad request in a batch fails alone with a 4xx."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from search_engine.manifest import Manifest, write_manifest
from search_engine.pooling import pool_pages
from search_engine.search_engine_api import ServiceConfig, create_app
from search_engine.searcher import Searcher, SearchSettings
from search_engine.shards import write_vector_shard

DIM = 16
PAGES = 90
QUERIES = 12


class StoredQueryEncoder:
    """Returns stored vectors for the query texts "q0".."q11"; rejects texts starting with "BAD" (ValueError).
    Records the number of queries of every call; its first call waits, once armed, until `waiting` requests are
    queued behind it, so the next batch holds exactly those."""

    model_name = "stand-in"
    fingerprint = None

    def __init__(self, vectors: list[np.ndarray]):
        self.vectors = vectors
        self.calls: list[int] = []
        self.batcher = None
        self.waiting = 0
        self.in_first_call = threading.Event()

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        self.calls.append(len(queries))
        if len(self.calls) == 1 and self.waiting:
            self.in_first_call.set()
            for _ in range(1000):
                if self.batcher.pending >= self.waiting:
                    break
                threading.Event().wait(0.01)
            assert self.batcher.pending == self.waiting, "the requests did not queue up"
        bad = [q for q in queries if q.startswith("BAD")]
        if bad:
            raise ValueError(f"the encoder cannot take {bad[0]!r}")
        return [self.vectors[int(q[1:])] for q in queries]


@pytest.fixture(scope="module")
def index_and_queries(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    rng = np.random.default_rng(3)
    pages = []
    for length in rng.integers(20, 40, PAGES):
        vectors = rng.standard_normal((int(length), DIM))
        pages.append((vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16))
    index_dir = tmp_path_factory.mktemp("batching") / "index"
    manifest = Manifest(backend="colqwen", model="stand-in", dim=DIM, settings={"pool_size": 4})
    for number, start in enumerate(range(0, PAGES, 30)):
        shard = pages[start : start + 30]
        pooled = pool_pages(np.concatenate(shard), [len(p) for p in shard], pool_size=4)
        ids = [f"doc{i}_1" for i in range(start, start + len(shard))]
        manifest.shards.append(write_vector_shard(index_dir, f"shard-{number:06d}", ids, shard, pooled))
    manifest.next_shard = len(manifest.shards)
    write_manifest(index_dir, manifest)
    queries = [np.asarray(pages[i][: 4 + i % 5], dtype=np.float32) for i in range(0, 3 * QUERIES, 3)]
    return index_dir, queries


def _app(index_dir: Path, encoder, mode: str, max_batch_queries: int):
    searcher = Searcher(
        index_dir, settings=SearchSettings(mode=mode, candidates=16, num_threads=2, residency="mmap"), encoder=encoder
    )
    config = ServiceConfig(dataset_dir=str(index_dir.parent), max_batch_queries=max_batch_queries, batch_wait_ms=0)
    return create_app(config, searcher)


def _one_at_a_time(url: str, requests: list[dict]) -> list[list[list[tuple[str, float]]]]:
    out = []
    for body in requests:
        results = httpx.post(f"{url}/search", json=body, timeout=30).json()["results"]
        out.append([[(hit["page_id"], hit["score"]) for hit in hits] for hits in results])
    return out


def _gated_batch(url: str, encoder: StoredQueryEncoder, requests: list[dict]) -> list[httpx.Response]:
    """One request alone, then `requests` concurrently while its batch is being encoded: they form one batch."""
    encoder.waiting = len(requests)
    with ThreadPoolExecutor(len(requests) + 1) as pool:
        first = pool.submit(httpx.post, f"{url}/search", json={"queries": ["q0"], "top_k": 3}, timeout=30)
        assert encoder.in_first_call.wait(10)
        responses = list(pool.map(lambda body: httpx.post(f"{url}/search", json=body, timeout=30), requests))
        assert first.result().status_code == 200
    return responses


def _assert_same_results(responses: list[httpx.Response], expected) -> None:
    """Same pages in the same order; scores equal up to float32 rounding (a batch pads its queries to the longest,
    which can change the order in which the kernel sums a query's vectors)."""
    got = [[[(hit["page_id"], hit["score"]) for hit in hits] for hits in r.json()["results"]] for r in responses]
    assert [[[page for page, _ in hits] for hits in rows] for rows in got] == [
        [[page for page, _ in hits] for hits in rows] for rows in expected
    ]
    scores = [score for rows in got for hits in rows for _, score in hits]
    assert scores == pytest.approx([score for rows in expected for hits in rows for _, score in hits], rel=1e-6)


REQUESTS = [
    {"queries": ["q1"], "top_k": 5},
    {"queries": ["q2", "q3"], "top_k": 3},
    {"queries": ["q4"], "top_k": 10},
    {"queries": ["q5", "q6", "q7"], "top_k": 1},
    {"queries": ["q8"], "top_k": 7},
    {"queries": ["q9"], "top_k": 5},
    {"queries": ["q10", "q11"], "top_k": 4},
]


@pytest.mark.parametrize("mode", ["exact", "approx"])
def test_concurrent_requests_are_encoded_and_scored_together_with_one_at_a_time_results(
    index_and_queries, run_service, mode
):
    index_dir, vectors = index_and_queries
    with run_service(_app(index_dir, StoredQueryEncoder(vectors), mode, max_batch_queries=0)) as url:
        expected = _one_at_a_time(url, REQUESTS)
        assert httpx.get(f"{url}/health").json()["batching"] is None
    encoder = StoredQueryEncoder(vectors)
    app = _app(index_dir, encoder, mode, max_batch_queries=64)
    encoder.batcher = app.state.batcher
    with run_service(app) as url:
        responses = _gated_batch(url, encoder, REQUESTS)
        stats = httpx.get(f"{url}/health").json()["batching"]
    assert encoder.calls == [1, 11]  # the first request alone, then all 7 requests' 11 queries in one call
    assert stats["requests_per_batch"] == {"1": 1, "7": 1} and stats["queries_per_batch"] == {"1": 1, "11": 1}
    assert [r.status_code for r in responses] == [200] * len(REQUESTS)
    _assert_same_results(responses, expected)
    assert [len(r.json()["results"][0]) for r in responses] == [body["top_k"] for body in REQUESTS]


def test_a_bad_request_in_a_batch_fails_alone_with_a_4xx(index_and_queries, run_service):
    index_dir, vectors = index_and_queries
    requests = [*REQUESTS[:3], {"queries": ["q3", "BAD query"], "top_k": 3}, *REQUESTS[3:]]
    with run_service(_app(index_dir, StoredQueryEncoder(vectors), "exact", max_batch_queries=0)) as url:
        expected = _one_at_a_time(url, REQUESTS)
    encoder = StoredQueryEncoder(vectors)
    app = _app(index_dir, encoder, "exact", max_batch_queries=64)
    encoder.batcher = app.state.batcher
    with run_service(app) as url:
        responses = _gated_batch(url, encoder, requests)
        assert httpx.post(f"{url}/search", json={"queries": ["q1"], "top_k": 5}).status_code == 200
    assert encoder.calls[:2] == [1, 13]  # the bad request was in the batch of 8 requests
    assert sorted(encoder.calls[2:-1]) == [1, 1, 1, 1, 2, 2, 2, 3]  # then each request on its own
    bad = responses.pop(3)
    assert bad.status_code == 422 and "the encoder cannot take 'BAD query'" in bad.json()["detail"]
    assert [r.status_code for r in responses] == [200] * len(REQUESTS)
    _assert_same_results(responses, expected)
