"""Per-page pooled vectors for the approximate first stage: a few k-means centroids summarize each page.

A page's ~780 vectors are clustered into `pool_size` centroids (batched k-means over pages of equal length,
deterministic initialization). MaxSim against the centroids is ~T/pool_size times cheaper than exact MaxSim and
ranks pages closely enough to pick a shortlist that the exact scorer then reranks.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_POOL_SIZE = 32
DEFAULT_ITERATIONS = 4
_PAGES_PER_CHUNK = 128


def kmeans_centroids(tokens: torch.Tensor, pool_size: int, iterations: int = DEFAULT_ITERATIONS) -> torch.Tensor:
    """[n, T, D] float32 page vectors -> [n, pool_size, D] centroids (inner-product assignment)."""
    num_pages, length, _ = tokens.shape
    seeds = torch.linspace(0, length - 1, pool_size).round().long()
    centroids = tokens[:, seeds, :].clone()
    dim = tokens.shape[2]
    for _ in range(iterations):
        assignment = torch.bmm(tokens, centroids.transpose(1, 2)).argmax(dim=2)
        sums = torch.zeros_like(centroids).scatter_add_(1, assignment.unsqueeze(-1).expand(-1, -1, dim), tokens)
        counts = torch.zeros((num_pages, pool_size), dtype=tokens.dtype).scatter_add_(
            1, assignment, torch.ones_like(assignment, dtype=tokens.dtype)
        )
        counts = counts.unsqueeze(-1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1.0), centroids)
    return centroids


def pool_pages(
    vectors: np.ndarray,
    token_counts: list[int],
    pool_size: int = DEFAULT_POOL_SIZE,
    iterations: int = DEFAULT_ITERATIONS,
) -> np.ndarray:
    """Pooled centroids of every page of a shard: [sum T, D] fp16 + counts -> [n_pages, pool_size, D] fp16."""
    counts = np.asarray(token_counts, dtype=np.int64)
    dim = vectors.shape[1]
    pooled = np.empty((len(counts), pool_size, dim), dtype=np.float16)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    page = 0
    with torch.no_grad():
        while page < len(counts):
            length = int(counts[page])
            stop = page + 1
            while stop < len(counts) and stop - page < _PAGES_PER_CHUNK and counts[stop] == length:
                stop += 1
            rows = vectors[starts[page] : starts[page] + (stop - page) * length]
            tokens = torch.from_numpy(np.asarray(rows, dtype=np.float32)).view(stop - page, length, dim)
            pooled[page:stop] = kmeans_centroids(tokens, pool_size, iterations).numpy().astype(np.float16)
            page = stop
    return pooled
