"""Micro-batching of concurrent search requests: one worker thread encodes and scores many requests at once.

Requests are queued; the worker takes every request waiting (up to `max_batch_queries` queries), encodes all their
queries in one encoder call and scores them in one search over one index snapshot, then routes each request its
own rows (cut to its own `top_k`). A request that finds the worker idle waits up to `batch_wait_ms` for others to
join it; requests that arrive while a batch runs form the next batch without waiting. Results equal one-at-a-time
search (every request's top_k is a prefix of the batch's largest top_k) up to float32 rounding of the scores: a
batch pads its queries to the longest, which can change the order in which a query's vectors are summed. (The
approximate mode shortlists max(candidates, top_k) pages: with top_k above `candidates`, a batch's largest top_k
widens every query's shortlist. The defaults, candidates 512 and max_top_k 100, never get there.)

A batch that raises is searched again one request at a time, so a request whose input makes the encoder or scorer
fail gets its own error and the others of its batch their results.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from search_engine.types import SearchHit

DEFAULT_MAX_BATCH_QUERIES = 128
"""Queries per batch at most (a request is never split: one larger than this is a batch of its own)."""
DEFAULT_BATCH_WAIT_MS = 2
"""How long a request that finds the worker idle waits for others to join its batch."""


@dataclass
class _Request:
    queries: list[str]
    top_k: int
    future: Future = field(default_factory=Future)


class SearchBatcher:
    """Batches the `search(queries, top_k)` calls of concurrent requests on `searcher` (a `Searcher`)."""

    def __init__(
        self,
        searcher: Any,
        max_batch_queries: int = DEFAULT_MAX_BATCH_QUERIES,
        batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    ):
        if max_batch_queries < 1:
            raise ValueError("max_batch_queries must be >= 1")
        if batch_wait_ms < 0:
            raise ValueError("batch_wait_ms must be >= 0")
        self.max_batch_queries = max_batch_queries
        self.batch_wait_s = batch_wait_ms / 1e3
        self._searcher = searcher
        self._pending: deque[_Request] = deque()
        self._ready = threading.Condition()
        self._worker: threading.Thread | None = None
        # Queries per batch -> number of batches, and requests per batch -> number of batches (since start).
        self.queries_per_batch: Counter[int] = Counter()
        self.requests_per_batch: Counter[int] = Counter()

    @property
    def pending(self) -> int:
        """Requests queued and not yet taken into a batch."""
        with self._ready:
            return len(self._pending)

    def submit(self, queries: list[str], top_k: int) -> Future:
        """Queue one request; the future resolves to its hits per query, or raises the error its search raised."""
        request = _Request(list(queries), top_k)
        with self._ready:
            if self._worker is None:  # started on first use: an app that never searches holds no thread
                self._worker = threading.Thread(target=self._loop, name="search-batcher", daemon=True)
                self._worker.start()
            self._pending.append(request)
            self._ready.notify()
        return request.future

    def stats(self) -> dict[str, Any]:
        with self._ready:
            return {
                "max_batch_queries": self.max_batch_queries,
                "batch_wait_ms": self.batch_wait_s * 1e3,
                "batches": sum(self.queries_per_batch.values()),
                "queries_per_batch": {str(k): v for k, v in sorted(self.queries_per_batch.items())},
                "requests_per_batch": {str(k): v for k, v in sorted(self.requests_per_batch.items())},
            }

    def _take(self) -> list[_Request]:
        with self._ready:
            was_idle = not self._pending
            while not self._pending:
                self._ready.wait()
            if was_idle and self.batch_wait_s > 0:
                deadline = time.monotonic() + self.batch_wait_s
                while sum(len(r.queries) for r in self._pending) < self.max_batch_queries:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
            batch = [self._pending.popleft()]
            size = len(batch[0].queries)
            while self._pending and size + len(self._pending[0].queries) <= self.max_batch_queries:
                size += len(self._pending[0].queries)
                batch.append(self._pending.popleft())
            self.queries_per_batch[size] += 1
            self.requests_per_batch[len(batch)] += 1
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            try:
                self._run(batch)
            except Exception as error:  # searched one by one, each request gets its own outcome
                if len(batch) == 1:
                    batch[0].future.set_exception(error)
                    continue
                for request in batch:
                    try:
                        self._run([request])
                    except Exception as own_error:
                        request.future.set_exception(own_error)

    def _run(self, batch: list[_Request]) -> None:
        k = max(request.top_k for request in batch)
        results: list[list[SearchHit]] = self._searcher.search([q for r in batch for q in r.queries], k)
        start = 0
        for request in batch:
            rows = results[start : start + len(request.queries)]
            start += len(request.queries)
            request.future.set_result([hits[: request.top_k] for hits in rows])
