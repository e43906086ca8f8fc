"""Residual-compressed inverted lists (the approximate mode's first stage): the codec's buckets and bytes, the
lookup tables, and WARP's page scores against their float64 definition, in the C kernel and the numpy path."""

from __future__ import annotations

import numpy as np
import pytest

from search_engine import residuals
from search_engine.manifest import IndexFormatError
from search_engine.maxsim import available_kernels
from search_engine.residuals import InvertedLists, ResidualCodec, residual_kernels

needs_kernel = pytest.mark.skipif(residuals._kernel is None, reason="the compiled kernel is not built here")


def test_codec_buckets_are_quantiles_and_bytes_pack_low_bits_first():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((4000, 8)).astype(np.float32) * np.arange(1, 9, dtype=np.float32)
    codec = ResidualCodec.fit(values, nbits=2)
    assert codec.code_bytes == 2 and codec.cutoffs.shape == (8, 3) and codec.weights.shape == (8, 4)
    buckets = codec.buckets(values)
    # Four equally filled buckets per dimension, each standing for its members' mean.
    for d in range(8):
        assert np.bincount(buckets[:, d], minlength=4).tolist() == [1000, 1000, 1000, 1000]
        for b in range(4):
            assert codec.weights[d, b] == pytest.approx(values[buckets[:, d] == b, d].mean(), rel=1e-5)
    # Dimension d's bucket sits at bits 2 * (d % 4) of byte d // 4.
    one = np.array([[codec.weights[d, d % 4] for d in range(8)]], dtype=np.float32)
    assert codec.encode(one).tolist() == [[0b11100100, 0b11100100]]
    np.testing.assert_array_equal(codec.decode(codec.encode(one)), one)
    np.testing.assert_array_equal(codec.decode(codec.encode(values)), codec.weights[np.arange(8), buckets])


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_nibble_tables_add_up_to_the_dot_product_with_the_decoded_residual(nbits: int):
    rng = np.random.default_rng(nbits)
    codec = ResidualCodec.fit(rng.standard_normal((500, 16)).astype(np.float32), nbits=nbits)
    codes = codec.encode(rng.standard_normal((30, 16)).astype(np.float32))
    query = rng.standard_normal((5, 16)).astype(np.float32)
    tables = codec.nibble_tables(query)
    assert tables.shape == (5, 16 * nbits // 8, 2, 16)
    positions = np.arange(codes.shape[1])
    low, high = tables[:, positions, 0, codes & 15], tables[:, positions, 1, codes >> 4]  # [5, 30, bytes]
    from_tables = (low + high).sum(axis=2).T  # [30 vectors, 5 query vectors]
    expected = codec.decode(codes).astype(np.float64) @ query.T.astype(np.float64)
    np.testing.assert_allclose(from_tables, expected, atol=1e-4)


def test_codec_refuses_widths_that_do_not_fill_bytes():
    with pytest.raises(ValueError, match="multiple of 8"):
        ResidualCodec.fit(np.zeros((10, 6), np.float32), nbits=2)
    with pytest.raises(ValueError, match="nbits must be one of"):
        ResidualCodec.fit(np.zeros((10, 8), np.float32), nbits=8)


def _lists(nbits: int, threads: int = 2):
    """60 centroids, 300 pages of 6 pooled vectors in two coded shards, and 3 uncoded pages (indices 300-302)."""
    rng = np.random.default_rng(11)
    codebook = rng.standard_normal((60, 32)).astype(np.float32)
    pooled = rng.standard_normal((300, 6, 32)).astype(np.float32)
    codes = (pooled @ codebook.T).argmax(axis=-1).astype(np.uint16)
    lists = InvertedLists(
        codebook, [(0, codes[:120]), (120, codes[120:])], [pooled[:120], pooled[120:]], 303, nbits, threads
    )
    return lists, codebook, pooled, codes, rng


def _definition(lists: InvertedLists, codebook, pooled, codes, query: np.ndarray, probe: int) -> np.ndarray:
    """WARP's page scores in float64 from the decoded vectors: per query vector, the max over a page's vectors in
    its `probe` best lists (else the last probed centroid's score), summed, minus the all-imputed sum."""
    vectors, flat_codes = pooled.reshape(-1, 32), codes.ravel()
    decoded = codebook[flat_codes] + lists.codec.decode(lists.codec.encode(vectors - codebook[flat_codes]))
    owner = np.repeat(np.arange(300), 6)
    query = query[np.any(query != 0, axis=1)].astype(np.float64)
    centroid_scores = query @ codebook.T.astype(np.float64)
    expected = np.zeros(lists.num_pages)
    for q, row in zip(query, centroid_scores, strict=True):
        probed = np.argsort(-row)[:probe]
        imputed = row[probed[-1]]
        best = np.full(lists.num_pages, imputed)
        found = np.zeros(lists.num_pages, dtype=bool)
        for vector, page, code in zip(decoded, owner, flat_codes, strict=True):
            if code in probed:
                best[page] = max(best[page], vector @ q) if found[page] else vector @ q
                found[page] = True
        expected += best - imputed
    return expected


@pytest.mark.parametrize("nbits", [2, 4])
@pytest.mark.parametrize("path", ["avx512", "avx2", "neon", "portable", "numpy"])
def test_page_scores_follow_warps_definition(monkeypatch, nbits: int, path: str):
    """Each residual kernel this CPU runs (and the portable C loop, and numpy without the extension)."""
    if path != "numpy" and path not in residual_kernels():
        pytest.skip(f"the {path} kernel is not built here or this CPU does not run it")
    if path == "numpy":
        monkeypatch.setattr(residuals, "_kernel", None)
    lists, codebook, pooled, codes, rng = _lists(nbits)
    if path != "numpy":
        lists.residual_kernel = path
    # 9 query vectors split between 2 threads, and 2 zero rows (padding), which add nothing.
    query = np.concatenate([rng.standard_normal((9, 32)), np.zeros((2, 32))]).astype(np.float32)
    scores = lists.page_scores(query, probe=4)
    expected = _definition(lists, codebook, pooled, codes, query, probe=4)
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert scores[300:].tolist() == [0.0, 0.0, 0.0]  # uncoded pages are in no list
    assert np.count_nonzero(scores[:300]) > 100  # and the probed lists do reach many coded pages


def test_shortlist_keeps_the_best_coded_pages_and_every_uncoded_one():
    lists, codebook, pooled, codes, rng = _lists(2, threads=1)
    query = rng.standard_normal((5, 32)).astype(np.float32)
    expected = _definition(lists, codebook, pooled, codes, query, probe=8)[:300]
    best = set(np.argsort(-expected)[:10].tolist())
    assert lists.shortlist(query, 8, 10).tolist() == sorted(best | {300, 301, 302})


def test_codes_outside_the_codebook_are_refused():
    with pytest.raises(IndexFormatError, match="codebook has 4"):
        InvertedLists(np.eye(8, dtype=np.float32)[:4], [(0, np.array([[0, 4]], np.uint16))], [np.ones((1, 2, 8))], 1)


@needs_kernel
def test_kernel_refuses_lists_or_pages_outside_its_buffers():
    lists, *_ = _lists(2, threads=1)
    query = np.ones((1, 32), np.float32)
    centroids, centroid_scores, imputed = lists.probes(query, 2)
    tables = lists.codec.nibble_tables(query)
    delta = np.zeros(303, np.float32)
    kernel = residuals._kernel.probed_residual_scores
    with pytest.raises(ValueError, match="centroid 60 is outside the 60 lists"):
        kernel(tables, np.array([[0, 60]], np.int64), centroid_scores, imputed, lists.offsets, lists.pages,
               lists.residuals, delta)  # fmt: skip
    with pytest.raises(ValueError, match="offsets"):
        kernel(tables, centroids, centroid_scores, imputed, lists.offsets[:-1], lists.pages, lists.residuals, delta)
    misaligned = lists.offsets.copy()
    misaligned[1 + int(np.flatnonzero(np.diff(misaligned[1:]))[0])] += 1  # a list start inside a block
    with pytest.raises(ValueError, match="whole blocks of 16"):
        kernel(tables, centroids, centroid_scores, imputed, misaligned, lists.pages, lists.residuals, delta)
    # The names it takes: the SIMD kernels this CPU runs that have a residual function, then the portable loop.
    assert residual_kernels()[-1] == "portable" and set(residual_kernels()[:-1]) <= set(available_kernels())
    with pytest.raises(ValueError, match="residual kernel 'sse9' is not compiled in"):
        kernel(tables, centroids, centroid_scores, imputed, lists.offsets, lists.pages, lists.residuals, delta, "sse9")
    with pytest.raises(ValueError, match="an entry names a page outside delta"):
        kernel(tables, centroids, centroid_scores, imputed, lists.offsets, lists.pages, lists.residuals, delta[:100])
