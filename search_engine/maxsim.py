"""Exact late-interaction (MaxSim) scoring over multi-vector pages.

score(q, p) = sum_i max_j <q_i, p_j> over the query's vectors i and the page's vectors j. Pages are stored back to
back in fp16 token matrices (one per shard). The scorer walks runs of consecutive pages with the same vector count;
for each run of P pages it multiplies all query vectors of the batch with the P pages in one batched GEMM
([P, Lq, D] x [P, D, T]) and reduces the product per page with a max over T (no padding, no per-call re-layout).
Worker threads each run single-threaded torch kernels on their own runs.

Two ways to hold the corpus (`residency`):
- "fp32" (default): at open, the pages are converted once into a resident fp32 copy laid out page by page as
  [D, T] (the layout the GEMM streams fastest). Costs 2x the shard files in RAM and the conversion at open.
- "fp16": the memory-mapped fp16 shards are used as they are; each run is converted to fp32 in a cache-sized
  buffer per call. Nothing extra in RAM, about half the speed.

Zero-padded query vectors contribute exactly 0 (max over a row of zeros), so queries of different lengths batch.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

RESIDENCY_MODES = ("fp32", "fp16")
DEFAULT_RESIDENCY = "fp32"
# Floats of the [P, Lq, T] product block kept per worker: small enough to stay in a core's L2 cache.
PRODUCT_BLOCK_FLOATS = 1 << 17
# Vectors converted per step in "fp16" residency (and per step of the fp32 copy at open).
CONVERT_BLOCK_TOKENS = 3200


@dataclass(frozen=True)
class PageRun:
    """Pages [page_start, page_start + num_pages) of the corpus, consecutive in shard `shard` from row
    `token_start`, each with `page_len` vectors."""

    shard: int
    token_start: int
    page_start: int
    num_pages: int
    page_len: int

    @property
    def token_stop(self) -> int:
        return self.token_start + self.num_pages * self.page_len


def plan_runs(token_counts_per_shard: list[np.ndarray]) -> list[PageRun]:
    """Maximal runs of consecutive pages of equal length within each shard."""
    runs: list[PageRun] = []
    page_offset = 0
    for shard, counts in enumerate(token_counts_per_shard):
        counts = np.asarray(counts, dtype=np.int64)
        if np.any(counts <= 0):
            raise ValueError(f"shard {shard}: every page needs at least one vector")
        token = 0
        index = 0
        while index < len(counts):
            stop = index + 1
            while stop < len(counts) and counts[stop] == counts[index]:
                stop += 1
            runs.append(PageRun(shard, token, page_offset + index, stop - index, int(counts[index])))
            token += (stop - index) * int(counts[index])
            index = stop
        page_offset += len(counts)
    return runs


def split_runs(runs: list[PageRun], max_pages) -> list[PageRun]:
    """Cut runs into pieces of at most `max_pages(page_len)` pages."""
    pieces = []
    for run in runs:
        step = max(1, int(max_pages(run.page_len)))
        for offset in range(0, run.num_pages, step):
            count = min(step, run.num_pages - offset)
            pieces.append(
                PageRun(
                    run.shard, run.token_start + offset * run.page_len, run.page_start + offset, count, run.page_len
                )
            )
    return pieces


def runs_of_pages(pages: np.ndarray, page_shard, page_token_start, page_len) -> list[PageRun]:
    """Runs over an ascending list of page indices: consecutive pages of one shard and one length."""
    runs: list[PageRun] = []
    index = 0
    while index < len(pages):
        stop = index + 1
        first = int(pages[index])
        while (
            stop < len(pages)
            and int(pages[stop]) == first + (stop - index)
            and page_shard[pages[stop]] == page_shard[first]
            and page_len[pages[stop]] == page_len[first]
        ):
            stop += 1
        runs.append(
            PageRun(int(page_shard[first]), int(page_token_start[first]), first, stop - index, int(page_len[first]))
        )
        index = stop
    return runs


def as_torch_readonly(array: np.ndarray) -> torch.Tensor:
    """A torch view of a (possibly read-only, memory-mapped) array; the engine never writes through it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def pad_queries(queries: list[np.ndarray]) -> np.ndarray:
    """Stack variable-length query matrices [Lq_i, D] into [B, max Lq, D] float32, zero-padded."""
    if not queries:
        raise ValueError("no queries")
    dim = queries[0].shape[1]
    longest = max(q.shape[0] for q in queries)
    batch = np.zeros((len(queries), longest, dim), dtype=np.float32)
    for row, query in enumerate(queries):
        if query.ndim != 2 or query.shape[1] != dim:
            raise ValueError(f"query {row} has shape {query.shape}, expected [n, {dim}]")
        batch[row, : query.shape[0]] = query
    return batch


@functools.cache
def _shared_pool(num_threads: int) -> ThreadPoolExecutor:
    # Each worker runs single-threaded kernels on its own runs (set per thread; the caller's threads are untouched).
    return ThreadPoolExecutor(
        num_threads, thread_name_prefix="maxsim", initializer=torch.set_num_threads, initargs=(1,)
    )


def default_num_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class _Workspace(threading.local):
    def buffer(self, name: str, floats: int) -> torch.Tensor:
        current = getattr(self, name, None)
        if current is None or current.numel() < floats:
            current = torch.empty(floats, dtype=torch.float32)
            setattr(self, name, current)
        return current[:floats]


class MaxSimScorer:
    """Exact MaxSim of query batches against the pages of a multi-shard corpus (all of them, or a chosen few)."""

    def __init__(
        self,
        shards: list[np.ndarray],
        token_counts: list[np.ndarray],
        num_threads: int | None = None,
        residency: str = DEFAULT_RESIDENCY,
    ):
        if residency not in RESIDENCY_MODES:
            raise ValueError(f"residency must be one of {RESIDENCY_MODES}, got {residency!r}")
        if len(shards) != len(token_counts):
            raise ValueError("one token-count array per shard is required")
        dims = {int(s.shape[1]) for s in shards if s.shape[0]}
        if len(dims) > 1:
            raise ValueError(f"shards disagree on the vector dimension: {sorted(dims)}")
        for index, (shard, counts) in enumerate(zip(shards, token_counts, strict=True)):
            if int(np.sum(counts)) != shard.shape[0]:
                raise ValueError(
                    f"shard {index}: token counts sum to {int(np.sum(counts))}, shard has {shard.shape[0]}"
                )
        self.dim = dims.pop() if dims else 0
        self.residency = residency
        counts = [np.asarray(c, dtype=np.int64) for c in token_counts]
        self.num_pages = int(sum(len(c) for c in counts))
        self._runs = plan_runs(counts)
        self._page_len = np.concatenate(counts or [np.zeros(0, np.int64)])
        self._page_shard = np.concatenate([np.full(len(c), i) for i, c in enumerate(counts)] or [np.zeros(0, int)])
        self._page_token_start = np.concatenate([np.cumsum(c) - c for c in counts] or [np.zeros(0, np.int64)]).astype(
            np.int64
        )
        self._num_threads = max(1, num_threads or default_num_threads())
        self._pool = _shared_pool(self._num_threads) if self._num_threads > 1 else None
        self._workspace = _Workspace()
        self._shards = [as_torch_readonly(s) for s in shards]
        self._resident: torch.Tensor | None = None
        self._shard_offset = np.concatenate([[0], np.cumsum([s.shape[0] for s in shards])]).astype(np.int64)
        if residency == "fp32":
            self._resident = torch.empty(int(self._shard_offset[-1]) * self.dim, dtype=torch.float32)
            pieces = split_runs(self._runs, lambda length: max(1, CONVERT_BLOCK_TOKENS // length))
            self._parallel(self._make_resident, [(run, 0) for run in pieces])
            self._shards = []  # the resident copy replaces the memory maps

    @property
    def resident_bytes(self) -> int:
        """Bytes of RAM held by the resident copy (0 when the memory-mapped shards are used directly)."""
        return 0 if self._resident is None else self._resident.numel() * self._resident.element_size()

    def _make_resident(self, runs: list[tuple[PageRun, int]]) -> None:
        for run, _ in runs:
            source = self._shards[run.shard][run.token_start : run.token_stop].view(run.num_pages, run.page_len, -1)
            self._page_matrices(run).copy_(source.transpose(1, 2))

    def _page_matrices(self, run: PageRun) -> torch.Tensor:
        """The run's pages in the resident copy, [P, D, T] (a view)."""
        start = (int(self._shard_offset[run.shard]) + run.token_start) * self.dim
        return self._resident[start : start + run.num_pages * run.page_len * self.dim].view(
            run.num_pages, self.dim, run.page_len
        )

    def _fp32_pages(self, run: PageRun) -> torch.Tensor:
        if self._resident is not None:
            return self._page_matrices(run)
        rows = run.num_pages * run.page_len
        converted = self._workspace.buffer("converted", rows * self.dim).view(rows, self.dim)
        converted.copy_(self._shards[run.shard][run.token_start : run.token_stop])
        return converted.view(run.num_pages, run.page_len, self.dim).transpose(1, 2)

    def _score_runs(self, flat: torch.Tensor, runs: list[tuple[PageRun, int]], maxes: torch.Tensor) -> None:
        """For each (run, output row): maxes[row + i] = max over the vectors of page i of flat @ page (i < P)."""
        vectors = flat.shape[0]
        for run, row in runs:
            product = self._workspace.buffer("product", run.num_pages * vectors * run.page_len)
            product = product.view(run.num_pages, vectors, run.page_len)
            pages = self._fp32_pages(run)
            torch.bmm(flat.expand(run.num_pages, -1, -1), pages, out=product)
            torch.amax(product, dim=2, out=maxes[row : row + run.num_pages])

    def _parallel(self, work, items: list[tuple[PageRun, int]]) -> None:
        """Run work(items) over contiguous slices of (run, row) items of about equal cost, one slice per worker."""
        if self._pool is None or len(items) < 2:
            work(items)
            return
        cost = np.cumsum([run.num_pages * run.page_len for run, _ in items])
        bounds = np.searchsorted(cost, np.linspace(0, cost[-1], self._num_threads + 1)[1:-1])
        slices = np.split(np.arange(len(items)), bounds)
        futures = [self._pool.submit(work, [items[i] for i in part]) for part in slices if len(part)]
        for future in futures:
            future.result()

    def _check(self, queries: np.ndarray) -> torch.Tensor:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 3 or (self.num_pages and queries.shape[2] != self.dim):
            raise ValueError(f"queries have shape {queries.shape}, expected [batch, length, {self.dim}]")
        return torch.from_numpy(queries)

    def _max_pages(self, vectors: int):
        def pages_per_step(length: int) -> int:
            by_product = PRODUCT_BLOCK_FLOATS // (vectors * length)
            by_input = CONVERT_BLOCK_TOKENS // length if self._resident is None else by_product
            return max(1, min(by_product, by_input))

        return pages_per_step

    def _reduce(self, maxes: torch.Tensor, batch: int, length: int) -> np.ndarray:
        return maxes.view(-1, batch, length).sum(dim=2).T.contiguous().numpy()

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """[B, Lq, D] float32 queries (zero-padded) -> [B, num_pages] float32 exact MaxSim scores."""
        query_tensor = self._check(queries)
        batch, length, dim = query_tensor.shape
        if self.num_pages == 0:
            return np.zeros((batch, 0), dtype=np.float32)
        flat = query_tensor.reshape(batch * length, dim)
        maxes = torch.empty((self.num_pages, batch * length), dtype=torch.float32)
        pieces = split_runs(self._runs, self._max_pages(batch * length))
        self._parallel(lambda part: self._score_runs(flat, part, maxes), [(run, run.page_start) for run in pieces])
        return self._reduce(maxes, batch, length)

    def scores_of(self, queries: np.ndarray, pages: np.ndarray) -> np.ndarray:
        """[B, Lq, D] queries, [n] page indices -> [B, n] exact MaxSim scores of those pages only."""
        query_tensor = self._check(queries)
        batch, length, dim = query_tensor.shape
        pages = np.asarray(pages, dtype=np.int64)
        if pages.size == 0:
            return np.zeros((batch, 0), dtype=np.float32)
        if pages.ndim != 1 or pages.min() < 0 or pages.max() >= self.num_pages:
            raise ValueError(f"page indices must be a list of integers in [0, {self.num_pages})")
        order = np.argsort(pages, kind="stable")
        runs = runs_of_pages(pages[order], self._page_shard, self._page_token_start, self._page_len)
        pieces = split_runs(runs, self._max_pages(batch * length))
        maxes = torch.empty((len(pages), batch * length), dtype=torch.float32)
        flat = query_tensor.reshape(batch * length, dim)
        # The i-th sorted page lands in row i; rows are put back in the caller's order below.
        rows = np.cumsum([0] + [run.num_pages for run in pieces])[:-1]
        self._parallel(lambda part: self._score_runs(flat, part, maxes), list(zip(pieces, rows.tolist(), strict=True)))
        sorted_scores = self._reduce(maxes, batch, length)
        result = np.empty_like(sorted_scores)
        result[:, order] = sorted_scores
        return result


def maxsim_reference(query: np.ndarray, page: np.ndarray) -> float:
    """The definition, in float64, one query against one page (for tests and verification)."""
    products = query.astype(np.float64) @ page.astype(np.float64).T
    return float(products.max(axis=1).sum())


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k best (index, score) pairs, best first; ties broken by the lower index."""
    k = min(k, scores.shape[1])
    if k <= 0:
        empty = np.zeros((scores.shape[0], 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    if k < scores.shape[1]:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    indices = np.empty((scores.shape[0], k), dtype=np.int64)
    for row in range(scores.shape[0]):
        cand = candidates[row]
        order = np.lexsort((cand, -scores[row, cand]))
        indices[row] = cand[order]
    return indices, np.take_along_axis(scores, indices, axis=1)
