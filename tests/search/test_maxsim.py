"""Exact MaxSim equals the definition; approximate mode returns exact scores and the exact top-k when it can."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from search_engine.manifest import Manifest, write_manifest
from search_engine.maxsim import (
    MaxSimScorer,
    kernel_available,
    maxsim_reference,
    pad_queries,
    plan_runs,
    runs_of_pages,
    top_k,
)
from search_engine.pooling import pool_pages
from search_engine.searcher import SearchSettings
from search_engine.shards import write_vector_shard
from search_engine.vector_index import EmbeddedVectorIndex

DIM = 16
# The torch path always; the fused kernel where it is built and the CPU runs it.
KERNELS = [False, True] if kernel_available() else [False]


def _build(tmp_path: Path, shards: list[list[np.ndarray]], pool_size: int | None = 4) -> tuple[Manifest, list]:
    manifest = Manifest(backend="colqwen", model="test-model", dim=DIM, settings={"pool_size": pool_size})
    flat = []
    for number, pages in enumerate(shards):
        ids = [f"doc{number}_{i + 1}" for i in range(len(pages))]
        matrix = np.concatenate(pages)
        pooled = pool_pages(matrix, [p.shape[0] for p in pages], pool_size) if pool_size else None
        manifest.shards.append(write_vector_shard(tmp_path, f"shard-{number:06d}", ids, pages, pooled))
        flat.extend(pages)
    write_manifest(tmp_path, manifest)
    return manifest, flat


@pytest.mark.parametrize("use_kernel", KERNELS)
@pytest.mark.parametrize("residency", ["fp16", "fp32", "mmap"])
@pytest.mark.parametrize("threads", [1, 2])
def test_exact_scores_equal_the_definition(tmp_path: Path, threads: int, residency: str, use_kernel: bool, make_pages):
    rng = np.random.default_rng(0)
    # Mixed page lengths (runs of equal length and singletons) across three shards.
    shards = [make_pages(rng, [7, 7, 7, 3, 12, 12], DIM), make_pages(rng, [5], DIM), make_pages(rng, [9, 2, 9], DIM)]
    manifest, pages = _build(tmp_path, shards)
    queries = [rng.standard_normal((n, DIM)).astype(np.float32) for n in (4, 1, 6)]
    scorer = MaxSimScorer(
        [np.concatenate(s) for s in shards],
        [[p.shape[0] for p in s] for s in shards],
        num_threads=threads,
        residency=residency,
        use_kernel=use_kernel,
    )
    assert scorer.uses_kernel is use_kernel
    scores = scorer.scores(pad_queries(queries))
    expected = np.array([[maxsim_reference(q, p) for p in pages] for q in queries])
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-4)
    # A subset in any order, with a repeat, scores the same as the full pass.
    subset = np.array([9, 0, 3, 3, 7, 5, 1])
    np.testing.assert_allclose(scorer.scores_of(pad_queries(queries), subset), expected[:, subset], atol=1e-4)

    index = EmbeddedVectorIndex(tmp_path, manifest, num_threads=threads, residency=residency, use_kernel=use_kernel)
    indices, best = index.exact(queries, 4)
    for row, query_scores in enumerate(expected):
        order = sorted(range(len(pages)), key=lambda i: (-query_scores[i], i))[:4]
        assert indices[row].tolist() == order
        np.testing.assert_allclose(best[row], query_scores[order], atol=1e-4)


def test_padding_a_query_does_not_change_scores(tmp_path: Path, make_pages):
    rng = np.random.default_rng(1)
    pages = make_pages(rng, [5, 8], DIM)
    short = rng.standard_normal((2, DIM)).astype(np.float32)
    long = rng.standard_normal((7, DIM)).astype(np.float32)
    scorer = MaxSimScorer([np.concatenate(pages)], [[5, 8]], num_threads=1)
    together = scorer.scores(pad_queries([short, long]))
    alone = scorer.scores(pad_queries([short]))
    np.testing.assert_allclose(together[0], alone[0], atol=1e-6)
    assert together[0][0] == pytest.approx(maxsim_reference(short, pages[0]), abs=1e-5)


def test_matches_colpali_engine_score_multi_vector(make_pages):
    import unidoc_rl.compat  # noqa: F401

    # isort: split
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    rng = np.random.default_rng(2)
    pages = make_pages(rng, [6, 11, 4], DIM)
    query = rng.standard_normal((5, DIM)).astype(np.float32)
    scorer = MaxSimScorer([np.concatenate(pages)], [[6, 11, 4]], num_threads=1)
    ours = scorer.scores(pad_queries([query]))[0]
    theirs = BaseVisualRetrieverProcessor.score_multi_vector(
        [torch.from_numpy(query)], [torch.from_numpy(p.astype(np.float32)) for p in pages], device="cpu"
    )[0]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)


def test_approx_reranks_exactly_and_finds_exact_top_k_with_full_shortlist(tmp_path: Path, make_pages):
    rng = np.random.default_rng(3)
    shards = [make_pages(rng, [10] * 8, DIM), make_pages(rng, [6] * 5 + [13], DIM)]
    manifest, pages = _build(tmp_path, shards)
    index = EmbeddedVectorIndex(tmp_path, manifest, num_threads=1)
    queries = [rng.standard_normal((3, DIM)).astype(np.float32) for _ in range(4)]
    exact_idx, exact_scores = index.exact(queries, 5)
    full_idx, full_scores = index.approx(queries, 5, candidates=len(pages))
    assert full_idx.tolist() == exact_idx.tolist()
    np.testing.assert_allclose(full_scores, exact_scores, atol=1e-5)
    small_idx, small_scores = index.approx(queries, 2, candidates=3)
    for row, query in enumerate(queries):
        for i, s in zip(small_idx[row], small_scores[row], strict=True):
            assert s == pytest.approx(maxsim_reference(query, pages[i]), abs=1e-4)


def test_runs_never_mix_lengths_or_shards():
    runs = plan_runs([np.array([4, 4, 4, 2, 4]), np.array([3, 3])])
    assert [(r.shard, r.page_start, r.num_pages, r.page_len, r.token_start) for r in runs] == [
        (0, 0, 3, 4, 0),
        (0, 3, 1, 2, 12),
        (0, 4, 1, 4, 14),
        (1, 5, 2, 3, 0),
    ]
    page_shard = np.array([0, 0, 0, 0, 0, 1, 1])
    page_token_start = np.array([0, 4, 8, 12, 14, 0, 3])
    page_len = np.array([4, 4, 4, 2, 4, 3, 3])
    runs = runs_of_pages(np.array([1, 2, 3, 4, 5, 6]), page_shard, page_token_start, page_len)
    assert [(r.shard, r.page_start, r.num_pages, r.token_start) for r in runs] == [
        (0, 1, 2, 4),
        (0, 3, 1, 12),
        (0, 4, 1, 14),
        (1, 5, 2, 0),
    ]


def test_scores_of_rejects_pages_outside_the_corpus(make_pages):
    rng = np.random.default_rng(4)
    scorer = MaxSimScorer([np.concatenate(make_pages(rng, [3, 3], DIM))], [[3, 3]], num_threads=1)
    query = pad_queries([rng.standard_normal((2, DIM)).astype(np.float32)])
    with pytest.raises(ValueError, match=r"page indices must be .* in \[0, 2\)"):
        scorer.scores_of(query, np.array([0, 2]))
    assert scorer.scores_of(query, np.array([], dtype=np.int64)).shape == (1, 0)


def test_unknown_residency_is_refused(make_pages):
    pages = make_pages(np.random.default_rng(5), [3], DIM)
    with pytest.raises(ValueError, match="residency must be one of"):
        MaxSimScorer([pages[0]], [[3]], residency="bf16")
    with pytest.raises(ValueError, match="residency must be one of"):
        SearchSettings(residency="bf16")
    # The torch path holds the vectors as they are; the kernel's panels pad each page to a multiple of 16 vectors.
    for use_kernel, vectors in [(False, 3), (True, 16)][: len(KERNELS)]:
        resident = {
            residency: MaxSimScorer([pages[0]], [[3]], residency=residency, use_kernel=use_kernel).resident_bytes
            for residency in ("fp16", "fp32", "mmap")
        }
        assert resident == {"fp16": vectors * DIM * 2, "fp32": vectors * DIM * 4, "mmap": 0}


def test_top_k_breaks_ties_by_lower_index():
    indices, scores = top_k(np.array([[1.0, 3.0, 3.0, 0.5, 3.0]], dtype=np.float32), 3)
    assert indices.tolist() == [[1, 2, 4]] and scores.tolist() == [[3.0, 3.0, 3.0]]
