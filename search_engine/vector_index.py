"""Search over an embedded multi-vector index: exact MaxSim, or pooled first stage + exact rerank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from search_engine.manifest import Manifest
from search_engine.maxsim import MaxSimScorer, as_torch_readonly, pad_queries, top_k
from search_engine.shards import load_pooled, load_vectors

SEARCH_MODES = ("exact", "approx")
DEFAULT_CANDIDATES = 128
_FIRST_STAGE_ELEMENTS = 1 << 22


class EmbeddedVectorIndex:
    """The pages of a manifest's shards, memory-mapped; scores are exact MaxSim in both modes."""

    def __init__(self, index_dir: Path, manifest: Manifest, num_threads: int | None = None, verify: bool = False):
        if manifest.dim is None:
            raise ValueError("a vector index needs the manifest's dim")
        self.dim = int(manifest.dim)
        shards = [load_vectors(index_dir, shard, self.dim, verify) for shard in manifest.shards]
        counts = [np.asarray(shard.token_counts, dtype=np.int64) for shard in manifest.shards]
        self.num_pages = manifest.num_pages
        self._scorer = MaxSimScorer(shards, counts, num_threads=num_threads)
        self._shard_tensors = [as_torch_readonly(s) for s in shards]
        self._page_shard = np.concatenate([np.full(len(c), i) for i, c in enumerate(counts)] or [np.zeros(0)]).astype(
            np.int64
        )
        self._page_start = np.concatenate(
            [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in counts] or [np.zeros(0)]
        ).astype(np.int64)
        self._page_len = np.concatenate(counts or [np.zeros(0)]).astype(np.int64)
        pooled = [load_pooled(index_dir, shard, self.dim, verify) for shard in manifest.shards]
        if pooled and all(p is not None for p in pooled) and len({p.shape[1] for p in pooled}) == 1:
            self._pooled = torch.from_numpy(np.concatenate(pooled, axis=0).astype(np.float32))
        else:
            self._pooled = None

    @property
    def supports_approx(self) -> bool:
        return self._pooled is not None

    def exact(self, queries: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self._scorer.scores(pad_queries(queries)), k)

    def approx(
        self, queries: list[np.ndarray], k: int, candidates: int = DEFAULT_CANDIDATES
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shortlist `max(candidates, k)` pages per query by MaxSim against pooled centroids, rerank exactly."""
        if self._pooled is None:
            raise ValueError("this index has no pooled vectors; re-ingest it with pooling enabled or use exact mode")
        batch = pad_queries(queries)
        shortlist = self._shortlist(torch.from_numpy(batch), max(candidates, k))
        union, inverse = np.unique(shortlist, return_inverse=True)
        union_scores = self._exact_subset(batch, union)
        own = np.take_along_axis(union_scores, inverse.reshape(shortlist.shape), axis=1)
        order, scores = top_k(own, k)
        return np.take_along_axis(shortlist, order, axis=1), scores

    def _shortlist(self, batch: torch.Tensor, size: int) -> np.ndarray:
        num_queries, length, dim = batch.shape
        pool_size = self._pooled.shape[1]
        flat = batch.reshape(num_queries * length, dim)
        first_stage = torch.empty((num_queries, self.num_pages), dtype=torch.float32)
        step = max(1, _FIRST_STAGE_ELEMENTS // (num_queries * length * pool_size))
        with torch.no_grad():
            for start in range(0, self.num_pages, step):
                chunk = self._pooled[start : start + step]
                product = flat @ chunk.reshape(-1, dim).T
                first_stage[:, start : start + chunk.shape[0]] = (
                    product.view(num_queries, length, chunk.shape[0], pool_size).amax(dim=3).sum(dim=1)
                )
        size = min(size, self.num_pages)
        return torch.topk(first_stage, size, dim=1).indices.numpy().astype(np.int64)

    def _exact_subset(self, batch: np.ndarray, pages: np.ndarray) -> np.ndarray:
        pieces = [
            self._shard_tensors[self._page_shard[p]][self._page_start[p] : self._page_start[p] + self._page_len[p]]
            for p in pages
        ]
        gathered = torch.cat(pieces).numpy()
        scorer = MaxSimScorer([gathered], [self._page_len[pages]])
        return scorer.scores(batch)
