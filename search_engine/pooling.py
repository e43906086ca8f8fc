"""Per-page pooled vectors for the approximate first stage: a few k-means centroids summarize each page.

A page's ~780 vectors are clustered into `pool_size` centroids (batched k-means over pages of equal length,
deterministic initialization). MaxSim against the centroids is ~T/pool_size times cheaper than exact MaxSim and
ranks pages closely enough to pick a shortlist that the exact scorer then reranks.

Each centroid is rescaled to the mean norm of its members (unit length for L2-normalized embeddings such as
ColQwen's). A plain mean is shorter than its members by an amount that depends on how spread the cluster is, which
biases the first-stage score of a page by its clusters' spreads rather than by how well its vectors match the
query; the rescaled centroid is the cluster's direction at its members' length.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_POOL_SIZE = 64
DEFAULT_ITERATIONS = 4
_PAGES_PER_CHUNK = 128


def kmeans_centroids(
    tokens: torch.Tensor, pool_size: int, iterations: int = DEFAULT_ITERATIONS, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """[n, T, D] float32 page vectors -> [n, pool_size, D] centroids (inner-product assignment), each at the mean
    norm of the members it was computed from. `lengths` [n]: pages shorter than T are zero-padded to T and only
    their first lengths[i] vectors count (so pages of different lengths cluster in one batch)."""
    num_pages, length, dim = tokens.shape
    if lengths is None:
        lengths = torch.full((num_pages,), length)
    fractions = torch.linspace(0, 1, pool_size)
    seeds = (fractions.unsqueeze(0) * (lengths.unsqueeze(1) - 1)).round().long()
    centroids = torch.gather(tokens, 1, seeds.unsqueeze(-1).expand(-1, -1, dim)).clone()
    valid = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).to(tokens.dtype)
    norms = tokens.norm(dim=2)
    for _ in range(max(1, iterations)):
        assignment = torch.bmm(tokens, centroids.transpose(1, 2)).argmax(dim=2)
        # Membership as a [n, T, pool_size] matrix (padding rows weigh 0): one batched GEMM sums each cluster's
        # vectors, far faster than scattering them.
        members = torch.zeros((num_pages, length, pool_size), dtype=tokens.dtype)
        members.scatter_(2, assignment.unsqueeze(-1), valid.unsqueeze(-1))
        sums = torch.bmm(members.transpose(1, 2), tokens)
        counts = members.sum(dim=1)
        norm_sums = torch.bmm(members.transpose(1, 2), norms.unsqueeze(-1)).squeeze(-1)
        has_members = counts > 0
        means = sums / counts.clamp(min=1.0).unsqueeze(-1)
        mean_norms = norm_sums / counts.clamp(min=1.0)
        rescaled = means * (mean_norms / means.norm(dim=2).clamp(min=1e-12)).unsqueeze(-1)
        centroids = torch.where(has_members.unsqueeze(-1), rescaled, centroids)
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
    with torch.no_grad():
        # Chunks of pages of similar length (sorted), zero-padded to the chunk's longest: one batched k-means each.
        order = np.argsort(counts, kind="stable")
        for chunk_start in range(0, len(order), _PAGES_PER_CHUNK):
            chunk = order[chunk_start : chunk_start + _PAGES_PER_CHUNK]
            longest = int(counts[chunk].max())
            inside = np.arange(longest)[None, :] < counts[chunk][:, None]
            rows = (starts[chunk][:, None] + np.arange(longest)[None, :])[inside]
            tokens = np.zeros((len(chunk), longest, dim), dtype=np.float32)
            tokens[inside] = vectors[rows]
            tokens = torch.from_numpy(tokens)
            lengths = torch.from_numpy(counts[chunk])
            pooled[chunk] = kmeans_centroids(tokens, pool_size, iterations, lengths).numpy().astype(np.float16)
    return pooled


def pool_tokens(page_vectors: list[np.ndarray], factor: int) -> list[np.ndarray]:
    """Index-time token pooling: each page's [T, D] vectors -> [max(T // factor, 1), D] fp16 by colpali-engine's
    HierarchicalTokenPooler (Ward clustering of the page's vectors; each cluster becomes its mean, L2-normalized
    as ColQwen's vectors are). MaxSim then runs over the pooled vectors: `factor` times fewer to store and to read.
    Factor 1, and pages of one vector, are returned as they are."""
    if factor < 1:
        raise ValueError(f"token pool factor must be >= 1, got {factor}")
    if factor == 1:
        return page_vectors
    import unidoc_rl.compat  # noqa: F401  (stands in for torchvision before colpali-engine)

    # isort: split
    from colpali_engine.compression.token_pooling import HierarchicalTokenPooler

    pooler = HierarchicalTokenPooler()
    pooled = []
    for page in page_vectors:
        if len(page) < 2:
            pooled.append(np.asarray(page, dtype=np.float16))
            continue
        tensor = torch.from_numpy(np.asarray(page, dtype=np.float32))
        pooled.append(pooler.pool_embeddings([tensor], pool_factor=factor)[0].numpy().astype(np.float16))
    return pooled
