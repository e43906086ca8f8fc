"""Search over an embedded multi-vector index: exact MaxSim, or an approximate first stage + exact rerank.

Approximate search, per query: [centroid inverted lists over the pooled vectors (ivf.py), when the index has a
codebook: the `prefilter` best pages] -> MaxSim against those pages' pooled centroids (all pages without lists) ->
the `candidates` best -> exact MaxSim over their full vectors. Returned scores are always exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from search_engine.ivf import DEFAULT_PREFILTER, DEFAULT_PROBE, open_lists
from search_engine.manifest import Manifest
from search_engine.maxsim import (
    DEFAULT_RESIDENCY,
    MaxSimScorer,
    default_num_threads,
    kernel_available,
    pad_queries,
    shared_pool,
    top_k,
)
from search_engine.residuals import DEFAULT_NBITS, InvertedLists
from search_engine.shards import load_pooled, load_vectors

SEARCH_MODES = ("exact", "approx")
DEFAULT_CANDIDATES = 512


class EmbeddedVectorIndex:
    """The pages of a manifest's shards; scores are exact MaxSim in both modes."""

    def __init__(
        self,
        index_dir: Path,
        manifest: Manifest,
        num_threads: int | None = None,
        verify: bool = False,
        residency: str = DEFAULT_RESIDENCY,
        use_kernel: bool | None = None,
        use_lists: bool = True,
        residual_bits: int = DEFAULT_NBITS,
    ):
        """`use_lists=False` ignores the index's inverted lists (the approximate mode then scans every page's
        pooled vectors); `residual_bits`: bits per dimension of the lists' residuals (residuals.py)."""
        if manifest.dim is None:
            raise ValueError("a vector index needs the manifest's dim")
        self.dim = int(manifest.dim)
        shards = [load_vectors(index_dir, shard, self.dim, verify) for shard in manifest.shards]
        counts = [np.asarray(shard.token_counts, dtype=np.int64) for shard in manifest.shards]
        self.num_pages = manifest.num_pages
        self._scorer = MaxSimScorer(shards, counts, num_threads=num_threads, residency=residency, use_kernel=use_kernel)
        kernel = kernel_available() if use_kernel is None else use_kernel
        pooled = [load_pooled(index_dir, shard, self.dim, verify) for shard in manifest.shards]
        self._first_stage: MaxSimScorer | None = None
        if pooled and all(p is not None for p in pooled) and len({p.shape[1] for p in pooled}) == 1:
            # Centroids are pages of pool_size vectors: the same exact kernel scores them (always resident, in the
            # precision its kernel reads fastest).
            self._first_stage = MaxSimScorer(
                [p.reshape(-1, self.dim) for p in pooled],
                [np.full(p.shape[0], p.shape[1], dtype=np.int64) for p in pooled],
                num_threads=num_threads,
                residency="fp16" if kernel else "fp32",
                use_kernel=kernel,
            )
        self._num_threads = num_threads or default_num_threads()
        self._lists: InvertedLists | None = None
        if self._first_stage is not None and use_lists:
            self._lists = open_lists(index_dir, manifest, pooled, verify, residual_bits, self._num_threads)

    @property
    def resident_bytes(self) -> int:
        first_stage = self._first_stage.resident_bytes if self._first_stage else 0
        return self._scorer.resident_bytes + first_stage + (self._lists.resident_bytes if self._lists else 0)

    @property
    def has_lists(self) -> bool:
        return self._lists is not None

    @property
    def lists(self) -> InvertedLists | None:
        """The residual first stage (None without a codebook or with `use_lists=False`)."""
        return self._lists

    @property
    def supports_approx(self) -> bool:
        return self._first_stage is not None

    def exact(self, queries: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self._scorer.scores(pad_queries(queries)), k)

    def approx(
        self,
        queries: list[np.ndarray],
        k: int,
        candidates: int = DEFAULT_CANDIDATES,
        probe: int = DEFAULT_PROBE,
        prefilter: int = DEFAULT_PREFILTER,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shortlist `max(candidates, k)` pages per query by MaxSim against pooled centroids (of the `prefilter`
        best pages of the inverted lists, each query vector probing `probe` centroids, where the index has them),
        rerank exactly."""
        if self._first_stage is None:
            raise ValueError("this index has no pooled vectors; re-ingest it with pooling enabled or use exact mode")
        batch = pad_queries(queries)
        size, width = max(candidates, k), max(prefilter, candidates, k)
        if self._lists is None:
            return self._reranked(batch, self.shortlist(batch, size, probe, width), k)

        def search_one(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            pages = self.shortlist(query[None], size, probe, width)
            return self._reranked(query[None], pages, k)

        # Queries of a batch share nothing past their encoding: a batch runs a whole query per worker, with no
        # hand-off between workers inside a query's stages (a single query splits each stage between them).
        if len(batch) > 1 and self._num_threads > 1:
            found = list(shared_pool(self._num_threads).map(search_one, batch))
        else:
            found = [search_one(query) for query in batch]
        return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])

    def _reranked(self, batch: np.ndarray, shortlist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """[B, Lq, D] queries and their [B, n] shortlists -> the k best of each by exact MaxSim (pages, scores)."""
        # Each query against its own shortlist: the shortlists of a batch barely overlap, so scoring every query
        # against their union would cost batch size times more.
        own = np.stack(
            [self._scorer.scores_of(query[None], pages)[0] for query, pages in zip(batch, shortlist, strict=True)]
        )
        order, scores = top_k(own, k)
        return np.take_along_axis(shortlist, order, axis=1), scores

    def shortlist(
        self, batch: np.ndarray, size: int, probe: int = DEFAULT_PROBE, prefilter: int = DEFAULT_PREFILTER
    ) -> np.ndarray:
        """[B, Lq, D] padded queries -> [B, size] pages with the best MaxSim against their centroids."""
        size = min(size, self.num_pages)
        if self._lists is None:
            first_stage = torch.from_numpy(self._first_stage.scores(batch))
            return torch.topk(first_stage, size, dim=1).indices.numpy().astype(np.int64)
        rows = []
        for query in batch:
            pages = self._lists.shortlist(query, probe, max(prefilter, size))
            if len(pages) > size:
                pooled = torch.from_numpy(self._first_stage.scores_of(query[None], pages)[0])
                pages = pages[torch.topk(pooled, size).indices.numpy()]
            rows.append(pages)
        return np.stack(rows).astype(np.int64)
