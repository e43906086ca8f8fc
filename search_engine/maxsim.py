"""Exact late-interaction (MaxSim) scoring over multi-vector pages.

score(q, p) = sum_i max_j <q_i, p_j> over the query's vectors i and the page's vectors j. Pages are stored back to
back in fp16 token matrices (one per shard). Two kernels compute the per-page maxima:
- a fused kernel (`search_engine._kernel`, an optional compiled extension; one build holds an AVX-512F/FMA/F16C and
  an AVX2/FMA/F16C kernel on x86-64, a NEON kernel on aarch64, and the fastest one the CPU runs is chosen at run
  time): pages are laid out as panels (tiles of 16 vectors, [D][16] each); every tile is read once, multiplied
  into register-resident dot products with all query vectors, and reduced to running maxima without writing the
  products anywhere. Reading fp16 panels halves the bytes streamed from memory.
- the torch path (everywhere else): runs of consecutive pages with the same vector count, one batched GEMM
  ([P, Lq, D] x [P, D, T]) per run of a few pages and a max over T into an L2-sized buffer.
Worker threads each run single-threaded kernels on their own pages (both kernels release the GIL).

How the corpus is held (`residency`):
- "fp16" (default where the fused kernel runs): a resident fp16 copy built at open (the size of the shard files).
- "fp32" (default elsewhere): a resident fp32 copy built at open (2x the shard files).
- "mmap": nothing beyond the memory-mapped shards; each run is converted in a cache-sized buffer per call.
Values are the same in every residency (fp16 converts to fp32 exactly), so the scores are too.

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

try:
    from search_engine import _kernel
except ImportError:  # the optional extension was not built here
    _kernel = None

RESIDENCY_MODES = ("fp16", "fp32", "mmap")
# Vectors per tile of the fused kernel's page panels.
PANEL_LANES = 16
# Floats of the [P, Lq, T] product block kept per worker: small enough to stay in a core's L2 cache.
PRODUCT_BLOCK_FLOATS = 1 << 17
# Vectors converted per step in "fp16" residency (and per step of the fp32 copy at open).
CONVERT_BLOCK_TOKENS = 3200


def available_kernels() -> tuple[str, ...]:
    """Names of the fused kernels built here that this CPU runs, fastest first ("avx512", "avx2", "neon")."""
    return () if _kernel is None else tuple(_kernel.kernels())


def kernel_available() -> bool:
    """Whether a fused kernel is built and this CPU can run it."""
    return bool(available_kernels())


DEFAULT_RESIDENCY = "fp16" if kernel_available() else "fp32"


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


def page_layout(token_counts_per_shard: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per page of the corpus: its shard, its first row in that shard and its vector count."""
    counts = [np.asarray(c, dtype=np.int64) for c in token_counts_per_shard]
    for shard, shard_counts in enumerate(counts):
        if np.any(shard_counts <= 0):
            raise ValueError(f"shard {shard}: every page needs at least one vector")
    page_shard = np.concatenate(
        [np.full(len(c), i, dtype=np.int64) for i, c in enumerate(counts)] or [np.zeros(0, np.int64)]
    )
    page_token_start = np.concatenate([np.cumsum(c) - c for c in counts] or [np.zeros(0, np.int64)])
    page_len = np.concatenate(counts or [np.zeros(0, np.int64)])
    return page_shard, page_token_start, page_len


def plan_runs(token_counts_per_shard: list[np.ndarray]) -> list[PageRun]:
    """Maximal runs of consecutive pages of equal length within each shard."""
    layout = page_layout(token_counts_per_shard)
    return runs_of_pages(np.arange(len(layout[0])), *layout)


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


_POOL_THREAD_PREFIX = "maxsim"


@functools.cache
def shared_pool(num_threads: int) -> ThreadPoolExecutor:
    # Each worker runs single-threaded kernels on its own runs (set per thread; the caller's threads are untouched).
    return ThreadPoolExecutor(
        num_threads, thread_name_prefix=_POOL_THREAD_PREFIX, initializer=torch.set_num_threads, initargs=(1,)
    )


def in_pool_worker() -> bool:
    """Whether the calling thread is one of the shared pools' workers: work split between workers runs inline
    there (a worker waiting on tasks queued behind its own would deadlock the pool)."""
    return threading.current_thread().name.startswith(_POOL_THREAD_PREFIX)


def default_num_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def write_panels(pages: torch.Tensor, panels: torch.Tensor) -> None:
    """Lay out [P, T, D] page vectors as the fused kernel's panels [P, tiles, D, 16] (last tile zero-padded)."""
    count, length, dim = pages.shape
    full, tail = divmod(length, PANEL_LANES)
    if full:
        panels[:, :full].copy_(pages[:, : full * PANEL_LANES].reshape(count, full, PANEL_LANES, dim).transpose(2, 3))
    if tail:
        panels[:, full, :, :tail].copy_(pages[:, full * PANEL_LANES :].transpose(1, 2))
        panels[:, full, :, tail:].zero_()


class _Workspace(threading.local):
    def buffer(self, name: str, count: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        current = getattr(self, name, None)
        if current is None or current.numel() < count:
            current = torch.empty(count, dtype=dtype)
            setattr(self, name, current)
        return current[:count]


class MaxSimScorer:
    """Exact MaxSim of query batches against the pages of a multi-shard corpus (all of them, or a chosen few).

    `use_kernel`: None picks the fused kernel where it is available (on a resident copy it reads panels; on the
    memory-mapped shards it reads the rows as written, transposing one tile at a time in L1), False forces the
    torch path, True requires the kernel (RuntimeError where it is not built or the CPU cannot run it).
    `kernel` names which fused kernel to use (one of `available_kernels()`; None: the fastest)."""

    def __init__(
        self,
        shards: list[np.ndarray],
        token_counts: list[np.ndarray],
        num_threads: int | None = None,
        residency: str = DEFAULT_RESIDENCY,
        use_kernel: bool | None = None,
        kernel: str | None = None,
    ):
        if residency not in RESIDENCY_MODES:
            raise ValueError(f"residency must be one of {RESIDENCY_MODES}, got {residency!r}")
        if kernel is not None and use_kernel is None:
            use_kernel = True
        if use_kernel and not kernel_available():
            raise RuntimeError(
                "the fused MaxSim kernel is not available here (extension not built, or the CPU has none of "
                "AVX-512F/FMA/F16C, AVX2/FMA/F16C, NEON)"
            )
        if kernel is not None and kernel not in available_kernels():
            raise RuntimeError(
                f"fused MaxSim kernel {kernel!r} is not available here (available: {available_kernels()})"
            )
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
        self.uses_kernel = kernel_available() if use_kernel is None else bool(use_kernel)
        # The fused kernel in use ("" without one).
        self.kernel = (kernel or available_kernels()[0]) if self.uses_kernel else ""
        self._page_shard, self._page_token_start, self._page_len = page_layout(token_counts)
        self.num_pages = len(self._page_len)
        self._runs = runs_of_pages(np.arange(self.num_pages), self._page_shard, self._page_token_start, self._page_len)
        panel_sizes = -(-self._page_len // PANEL_LANES) * PANEL_LANES * self.dim
        self._panel_offset = (np.cumsum(panel_sizes) - panel_sizes).astype(np.int64)
        self._num_threads = max(1, num_threads or default_num_threads())
        self._pool = shared_pool(self._num_threads) if self._num_threads > 1 else None
        self._workspace = _Workspace()
        self._shards = [as_torch_readonly(s) for s in shards]
        # The rows the kernel reads in "mmap" residency (views of fp16 shards; other dtypes are converted once).
        kernel_rows = self.uses_kernel and residency == "mmap"
        self._shard_arrays = [np.ascontiguousarray(s, dtype=np.float16) for s in shards] if kernel_rows else []
        self._resident: torch.Tensor | None = None
        self._resident_array: np.ndarray | None = None
        self._shard_offset = np.concatenate([[0], np.cumsum([s.shape[0] for s in shards])]).astype(np.int64)
        if residency != "mmap":
            size = int(panel_sizes.sum()) if self.uses_kernel else int(self._shard_offset[-1]) * self.dim
            self._resident = torch.empty(size, dtype=torch.float16 if residency == "fp16" else torch.float32)
            pieces = split_runs(self._runs, lambda length: max(1, CONVERT_BLOCK_TOKENS // length))
            self._parallel(self._make_resident, [(run, 0) for run in pieces])
            self._resident_array = self._resident.numpy()
            self._shards, self._shard_arrays = [], []  # the resident copy replaces the memory maps

    @property
    def resident_bytes(self) -> int:
        """Bytes of RAM held by the resident copy (0 when the memory-mapped shards are used directly)."""
        return 0 if self._resident is None else self._resident.numel() * self._resident.element_size()

    def _run_vectors(self, run: PageRun) -> torch.Tensor:
        """The run's pages from the memory-mapped shards, [P, T, D] fp16."""
        return self._shards[run.shard][run.token_start : run.token_stop].view(run.num_pages, run.page_len, -1)

    def _make_resident(self, runs: list[tuple[PageRun, int]]) -> None:
        for run, _ in runs:
            if self.uses_kernel:
                write_panels(self._run_vectors(run), self._run_panels(run))
            else:
                self._page_matrices(run).copy_(self._run_vectors(run).transpose(1, 2))

    def _run_panels(self, run: PageRun) -> torch.Tensor:
        """The run's pages in the resident panel copy, [P, tiles, D, 16] (a view)."""
        start = int(self._panel_offset[run.page_start])
        tiles = -(-run.page_len // PANEL_LANES)
        size = run.num_pages * tiles * PANEL_LANES * self.dim
        return self._resident[start : start + size].view(run.num_pages, tiles, self.dim, PANEL_LANES)

    def _page_matrices(self, run: PageRun) -> torch.Tensor:
        """The run's pages in the resident copy of the torch path, [P, D, T] (a view)."""
        start = (int(self._shard_offset[run.shard]) + run.token_start) * self.dim
        return self._resident[start : start + run.num_pages * run.page_len * self.dim].view(
            run.num_pages, self.dim, run.page_len
        )

    def _fp32_pages(self, run: PageRun) -> torch.Tensor:
        if self._resident is not None and self._resident.dtype == torch.float32:
            return self._page_matrices(run)
        converted = self._workspace.buffer("converted", run.num_pages * run.page_len * self.dim)
        if self._resident is not None:
            return converted.view(run.num_pages, self.dim, run.page_len).copy_(self._page_matrices(run))
        converted = converted.view(run.num_pages, run.page_len, self.dim).copy_(self._run_vectors(run))
        return converted.transpose(1, 2)

    def _score_runs(self, flat: torch.Tensor, runs: list[tuple[PageRun, int]], maxes: torch.Tensor) -> None:
        """For each (run, output row): maxes[row + i] = max over the vectors of page i of flat @ page (i < P)."""
        vectors = flat.shape[0]
        for run, row in runs:
            product = self._workspace.buffer("product", run.num_pages * vectors * run.page_len)
            product = product.view(run.num_pages, vectors, run.page_len)
            pages = self._fp32_pages(run)
            torch.bmm(flat.expand(run.num_pages, -1, -1), pages, out=product)
            torch.amax(product, dim=2, out=maxes[row : row + run.num_pages])

    def _kernel_maxima(self, query_t: np.ndarray, pages: np.ndarray, maxes: np.ndarray) -> None:
        """The fused kernel's per-vector maxima: maxes[i] for page pages[i] (ascending). The pages are cut into one
        slice of about equal vector count per worker; a slice is one kernel call on the resident panels, and one
        per shard it crosses on the memory-mapped rows."""
        vectors = query_t.shape[1]
        cost = np.cumsum(self._page_len[pages])
        bounds = np.searchsorted(cost, np.linspace(0, cost[-1], self._num_threads + 1)[1:-1], side="right")
        bounds = np.concatenate([[0], bounds, [len(pages)]])

        def work(a: int, b: int) -> None:
            chosen = pages[a:b]
            if self._resident_array is not None:
                _kernel.score_panels(
                    query_t,
                    vectors,
                    self.dim,
                    self._resident_array,
                    self._resident.dtype == torch.float16,
                    self._panel_offset[chosen],
                    self._page_len[chosen],
                    maxes[a:b],
                    self.kernel,
                )
                return
            shard_of = self._page_shard[chosen]
            cuts = np.concatenate([[0], np.flatnonzero(np.diff(shard_of)) + 1, [len(chosen)]])
            for first, stop in zip(cuts[:-1], cuts[1:], strict=True):
                _kernel.score_rows(
                    query_t,
                    vectors,
                    self.dim,
                    self._shard_arrays[shard_of[first]],
                    self._page_token_start[chosen[first:stop]],
                    self._page_len[chosen[first:stop]],
                    maxes[a + first : a + stop],
                    self.kernel,
                )

        slices = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]
        if self._pool is None or len(slices) < 2 or in_pool_worker():
            for a, b in slices:
                work(a, b)
            return
        for future in [self._pool.submit(work, a, b) for a, b in slices]:
            future.result()

    def _parallel(self, work, items: list[tuple[PageRun, int]]) -> None:
        """Run work(items) over contiguous slices of (run, row) items of about equal cost, one slice per worker."""
        if self._pool is None or len(items) < 2 or in_pool_worker():
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

    def _pages_per_item(self, vectors: int):
        def pages_per_item(length: int) -> int:
            by_product = PRODUCT_BLOCK_FLOATS // (vectors * length)
            converts = self._resident is None or self._resident.dtype != torch.float32
            by_input = CONVERT_BLOCK_TOKENS // length if converts else by_product
            return min(by_product, by_input)

        return pages_per_item

    def _maxima(self, queries: torch.Tensor, pages: np.ndarray | None) -> np.ndarray:
        """[B, Lq, D] queries -> [B, len(pages)] sums of per-vector maxima over ascending `pages` (None: all)."""
        batch, length, dim = queries.shape
        flat = queries.reshape(batch * length, dim)
        maxes = torch.zeros((self.num_pages if pages is None else len(pages), batch * length), dtype=torch.float32)
        if batch * length and self.uses_kernel:
            query_t = np.ascontiguousarray(flat.numpy().T)
            self._kernel_maxima(query_t, np.arange(self.num_pages) if pages is None else pages, maxes.numpy())
        elif batch * length:
            layout = (self._page_shard, self._page_token_start, self._page_len)
            runs = self._runs if pages is None else runs_of_pages(pages, *layout)
            pieces = split_runs(runs, self._pages_per_item(max(1, batch * length)))
            rows = np.cumsum([0] + [run.num_pages for run in pieces])
            items = list(zip(pieces, rows[:-1].tolist(), strict=True))
            self._parallel(lambda part: self._score_runs(flat, part, maxes), items)
        return maxes.view(-1, batch, length).sum(dim=2).T.contiguous().numpy()

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """[B, Lq, D] float32 queries (zero-padded) -> [B, num_pages] float32 exact MaxSim scores."""
        query_tensor = self._check(queries)
        if self.num_pages == 0:
            return np.zeros((query_tensor.shape[0], 0), dtype=np.float32)
        return self._maxima(query_tensor, None)

    def scores_of(self, queries: np.ndarray, pages: np.ndarray) -> np.ndarray:
        """[B, Lq, D] queries, [n] page indices -> [B, n] exact MaxSim scores of those pages only."""
        query_tensor = self._check(queries)
        pages = np.asarray(pages, dtype=np.int64)
        if pages.size == 0:
            return np.zeros((query_tensor.shape[0], 0), dtype=np.float32)
        if pages.ndim != 1 or pages.min() < 0 or pages.max() >= self.num_pages:
            raise ValueError(f"page indices must be a list of integers in [0, {self.num_pages})")
        order = np.argsort(pages, kind="stable")
        # The i-th sorted page lands in column i; columns are put back in the caller's order below.
        sorted_scores = self._maxima(query_tensor, pages[order])
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
