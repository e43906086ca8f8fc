"""Exact and approximate late-interaction (MaxSim) scoring over memory-mapped fp16 page vectors.

score(q, p) = sum_i max_j <q_i, p_j> over the query's vectors i and the page's vectors j. Pages are stored back to
back in fp16 token matrices (one per shard). At open time the pages are grouped into blocks of consecutive pages
with the same vector count, sized to stay in a core's cache; a search converts one block at a time to fp32,
multiplies it with all queries of the batch at once, and reduces the product per page with a reshape (no
padding, no per-call re-layout). Worker threads each run single-threaded torch kernels on their own blocks.
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

DEFAULT_BLOCK_TOKENS = 1600


@dataclass(frozen=True)
class TokenBlock:
    """Pages [page_start, page_start + num_pages) of the corpus, each with `page_len` vectors, stored in
    rows [token_start, token_start + num_pages * page_len) of shard `shard`."""

    shard: int
    token_start: int
    page_start: int
    num_pages: int
    page_len: int

    @property
    def token_stop(self) -> int:
        return self.token_start + self.num_pages * self.page_len


def plan_blocks(token_counts_per_shard: list[np.ndarray], block_tokens: int = DEFAULT_BLOCK_TOKENS) -> list[TokenBlock]:
    """Group consecutive pages of equal length into blocks of at most `block_tokens` rows (at least one page)."""
    blocks: list[TokenBlock] = []
    page_offset = 0
    for shard, counts in enumerate(token_counts_per_shard):
        counts = np.asarray(counts, dtype=np.int64)
        if np.any(counts <= 0):
            raise ValueError(f"shard {shard}: every page needs at least one vector")
        token = 0
        index = 0
        while index < len(counts):
            length = int(counts[index])
            per_block = max(1, block_tokens // length)
            stop = index + 1
            while stop < len(counts) and stop - index < per_block and counts[stop] == length:
                stop += 1
            blocks.append(TokenBlock(shard, token, page_offset + index, stop - index, length))
            token += (stop - index) * length
            index = stop
        page_offset += len(counts)
    return blocks


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
    # Each worker runs single-threaded kernels on its own blocks (set per thread; the caller's threads are untouched).
    return ThreadPoolExecutor(
        num_threads, thread_name_prefix="maxsim", initializer=torch.set_num_threads, initargs=(1,)
    )


def default_num_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class _Workspace(threading.local):
    def buffers(self, rows: int, dim: int, batch_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        if (
            getattr(self, "rows", 0) < rows
            or getattr(self, "dim", 0) != dim
            or getattr(self, "batch_rows", 0) < batch_rows
        ):
            self.rows, self.dim, self.batch_rows = rows, dim, batch_rows
            self.block = torch.empty(rows * dim, dtype=torch.float32)
            self.product = torch.empty(batch_rows * rows, dtype=torch.float32)
        return self.block, self.product


class MaxSimScorer:
    """Exact MaxSim of query batches against every page of a multi-shard corpus."""

    def __init__(
        self,
        shards: list[np.ndarray],
        token_counts: list[np.ndarray],
        num_threads: int | None = None,
        block_tokens: int = DEFAULT_BLOCK_TOKENS,
    ):
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
        self.num_pages = int(sum(len(c) for c in token_counts))
        self._shards = [as_torch_readonly(s) for s in shards]
        self._blocks = plan_blocks(token_counts, block_tokens)
        self._max_block_rows = max((b.num_pages * b.page_len for b in self._blocks), default=0)
        self._num_threads = max(1, num_threads or default_num_threads())
        self._pool = _shared_pool(self._num_threads) if self._num_threads > 1 else None
        self._workspace = _Workspace()

    def _score_range(self, queries: torch.Tensor, out: torch.Tensor, first: int, stop: int) -> None:
        batch, length, dim = queries.shape
        flat = queries.reshape(batch * length, dim)
        block_buf, product_buf = self._workspace.buffers(self._max_block_rows, dim, batch * length)
        for block in self._blocks[first:stop]:
            rows = block.num_pages * block.page_len
            vectors = block_buf[: rows * dim].view(rows, dim)
            vectors.copy_(self._shards[block.shard][block.token_start : block.token_stop])
            product = product_buf[: batch * length * rows].view(batch * length, rows)
            torch.matmul(flat, vectors.T, out=product)
            per_page = product.view(batch * length, block.num_pages, block.page_len).amax(dim=2)
            out[:, block.page_start : block.page_start + block.num_pages] = per_page.view(batch, length, -1).sum(dim=1)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """[B, Lq, D] float32 queries (zero-padded) -> [B, num_pages] float32 exact MaxSim scores."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 3 or (self.num_pages and queries.shape[2] != self.dim):
            raise ValueError(f"queries have shape {queries.shape}, expected [batch, length, {self.dim}]")
        query_tensor = torch.from_numpy(queries)
        out = torch.empty((queries.shape[0], self.num_pages), dtype=torch.float32)
        if not self._blocks:
            return out.numpy()
        if self._pool is None or len(self._blocks) < 2 * self._num_threads:
            self._score_range(query_tensor, out, 0, len(self._blocks))
            return out.numpy()
        bounds = np.linspace(0, len(self._blocks), self._num_threads + 1).astype(int)
        futures = [
            self._pool.submit(self._score_range, query_tensor, out, int(bounds[i]), int(bounds[i + 1]))
            for i in range(self._num_threads)
        ]
        for future in futures:
            future.result()
        return out.numpy()


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
