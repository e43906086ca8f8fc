"""Centroid inverted lists (the sublinear first stage): recall on a topic
fixture against exact search, and incremental ingest after a build (coded and uncoded shards are both found)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from search_engine.corpus import RenderedPage
from search_engine.ingestion import IngestConfig, _IndexWriter, _PendingDocument
from search_engine.ivf import build_ivf, codebook_file, codes_kind, default_num_centroids, lists_file
from search_engine.manifest import DocumentEntry, Manifest, read_manifest, write_manifest
from search_engine.pooling import pool_pages
from search_engine.residuals import ListArrays
from search_engine.searcher import Searcher, SearchSettings
from search_engine.shards import write_vector_shard
from search_engine.vector_index import EmbeddedVectorIndex

DIM = 32
TOKENS = 40
POOL = 8
PAGES = 600
PAGES_PER_TOPIC = 10


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_default_codebook_size_grows_with_the_corpus():
    assert default_num_centroids(3200) == 512
    assert default_num_centroids(6_400_000) == 16384
    assert default_num_centroids(10**12) == 1 << 16


def _topic_pages(rng: np.random.Generator, count: int, topics: np.ndarray, first: int):
    """Pages of topics of 6 sharing concepts (half background vectors); returns pages and their own concepts."""
    background = _unit(np.random.default_rng(99).standard_normal((4, DIM)))
    pages, concepts = [], []
    for page in range(first, first + count):
        own = np.concatenate(
            [topics[page // PAGES_PER_TOPIC][rng.permutation(8)[:6]], _unit(rng.standard_normal((2, DIM)))]
        )
        content = own[rng.integers(0, 8, TOKENS // 2)] + 0.3 * rng.standard_normal((TOKENS // 2, DIM)) / np.sqrt(DIM)
        blank = background[rng.integers(0, 4, TOKENS // 2)] + 0.1 * rng.standard_normal((TOKENS // 2, DIM))
        pages.append(_unit(np.concatenate([blank, content])).astype(np.float16))
        concepts.append(own)
    return pages, concepts


def _query(rng: np.random.Generator, concepts: np.ndarray) -> np.ndarray:
    noisy = concepts[rng.integers(0, 8, 8)] + 0.5 * rng.standard_normal((8, DIM)) / np.sqrt(DIM)
    return _unit(noisy).astype(np.float32)


def _write_shard(index_dir: Path, manifest: Manifest, number: int, pages: list[np.ndarray], first: int) -> None:
    pooled = pool_pages(np.concatenate(pages), [TOKENS] * len(pages), pool_size=POOL)
    ids = [f"doc{i // PAGES_PER_TOPIC}_{i % PAGES_PER_TOPIC + 1}" for i in range(first, first + len(pages))]
    manifest.shards.append(write_vector_shard(index_dir, f"shard-{number:06d}", ids, pages, pooled))
    manifest.next_shard = number + 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(7)
    topics = _unit(rng.standard_normal((PAGES // PAGES_PER_TOPIC + 20, 8, DIM)))
    pages, concepts = _topic_pages(rng, PAGES, topics, 0)
    index_dir = tmp_path_factory.mktemp("ivf_index")
    manifest = Manifest(backend="colqwen", model="test-model", dim=DIM, settings={"pool_size": POOL})
    for number, start in enumerate(range(0, PAGES, 150)):
        _write_shard(index_dir, manifest, number, pages[start : start + 150], start)
    write_manifest(index_dir, manifest)
    report = build_ivf(index_dir, num_centroids=512, progress=False)
    targets = rng.integers(0, PAGES, 16)
    queries = [_query(rng, concepts[t]) for t in targets]
    return index_dir, report, queries, targets, topics, rng


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(e)) / exact.shape[1] for a, e in zip(approx, exact, strict=True)]))


def test_lists_reach_exact_recall_while_scoring_a_fraction_of_the_pages(corpus):
    index_dir, report, queries, targets, _, _ = corpus
    assert report["centroids"] == 512 and report["pooled_vectors"] == PAGES * POOL
    index = EmbeddedVectorIndex(index_dir, read_manifest(index_dir), num_threads=2)
    assert index.has_lists and len(index._lists.uncoded) == 0
    exact_idx, exact_scores = index.exact(queries, 10)
    # The exact top 10 is mostly the target's topic (pages sharing 6 of 8 concepts), the target itself near the top.
    assert np.mean([t in row[:3] for t, row in zip(targets, exact_idx, strict=True)]) >= 0.9
    recalls = {}
    for probe, prefilter, candidates in [(1, 12, 12), (8, 180, 90), (32, 30, 30)]:
        idx, scores = index.approx(queries, 10, candidates=candidates, probe=probe, prefilter=prefilter)
        recalls[(probe, prefilter, candidates)] = _recall(idx, exact_idx)
        # Scores are exact: a page found by both has the same score.
        for row in range(len(queries)):
            exact_of = dict(zip(exact_idx[row].tolist(), exact_scores[row].tolist(), strict=True))
            for page, score in zip(idx[row].tolist(), scores[row].tolist(), strict=True):
                if page in exact_of:
                    assert score == pytest.approx(exact_of[page], abs=1e-5)
        for query in queries:
            assert len(index._lists.shortlist(query, probe, prefilter)) == prefilter
    # Measured: 0.51 with 1 probed centroid and 12 pages (2% of the corpus) kept, 0.96 with 8 probed and 180 (30%)
    # kept, 0.925 with 32 probed and only the 30 best pages of the residual scores reranked (no pooled stage).
    assert recalls[(1, 12, 12)] < 0.6
    assert recalls[(8, 180, 90)] >= 0.94
    assert recalls[(32, 30, 30)] >= 0.9
    # The pooled scan over every page (no lists) agrees with the exact ranking on this fixture too.
    scan = EmbeddedVectorIndex(index_dir, read_manifest(index_dir), num_threads=2, use_lists=False)
    assert not scan.has_lists and _recall(scan.approx(queries, 10, candidates=90)[0], exact_idx) >= 0.95


@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_finds_what_each_query_finds_alone(corpus, threads: int):
    # A batch runs a whole query per worker (with 2 threads), each stage inline; alone, a query splits its stages
    # between the workers. Queries of different lengths: the batch pads them with zero rows.
    index_dir, _, queries, _, _, _ = corpus
    index = EmbeddedVectorIndex(index_dir, read_manifest(index_dir), num_threads=threads)
    ragged = [query[: 4 + i % 5] for i, query in enumerate(queries)]
    batch_idx, batch_scores = index.approx(ragged, 10, candidates=60, probe=8, prefilter=120)
    for row, query in enumerate(ragged):
        alone_idx, alone_scores = index.approx([query], 10, candidates=60, probe=8, prefilter=120)
        assert batch_idx[row].tolist() == alone_idx[0].tolist()
        np.testing.assert_allclose(batch_scores[row], alone_scores[0], rtol=0, atol=1e-5)
    assert batch_idx.shape == (len(queries), 10) and len({tuple(r) for r in batch_idx.tolist()}) > 1


def test_an_open_keeps_the_lists_it_built_and_the_next_open_reads_them(corpus, tmp_path: Path, monkeypatch, caplog):
    index_dir = tmp_path / "index"
    shutil.copytree(corpus[0], index_dir, ignore=shutil.ignore_patterns("ivf-lists-*"))
    queries = corpus[2]
    built = EmbeddedVectorIndex(index_dir, read_manifest(index_dir), num_threads=1)
    assert sorted(p.name for p in index_dir.glob("ivf-lists-*")) == [lists_file(2)]
    expected = built.approx(queries, 10, candidates=60, probe=8, prefilter=120)

    def no_build(*args, **kwargs):
        raise AssertionError("the lists were built again")

    with monkeypatch.context() as patch:
        patch.setattr(ListArrays, "build", no_build)
        kept = EmbeddedVectorIndex(index_dir, read_manifest(index_dir), num_threads=1)
    for name in ("offsets", "pages", "residuals"):
        np.testing.assert_array_equal(getattr(kept.lists.arrays, name), getattr(built.lists.arrays, name))
    np.testing.assert_array_equal(kept.lists.codec.weights, built.lists.codec.weights)
    found = kept.approx(queries, 10, candidates=60, probe=8, prefilter=120)
    assert found[0].tolist() == expected[0].tolist() and np.array_equal(found[1], expected[1])

    # Another residual width has its own lists.
    assert EmbeddedVectorIndex(index_dir, read_manifest(index_dir), residual_bits=4).lists.codec.nbits == 4
    assert sorted(p.name for p in index_dir.glob("ivf-lists-*")) == [lists_file(2), lists_file(4)]

    # Damaged (cut in half): a warning, the lists built again and the file written whole.
    path = index_dir / lists_file(2)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="search_engine.residuals"):
        again = EmbeddedVectorIndex(index_dir, read_manifest(index_dir), num_threads=1)
    assert "unreadable" in caplog.text
    assert again.approx(queries, 10, candidates=60, probe=8, prefilter=120)[0].tolist() == expected[0].tolist()
    assert ListArrays.load(path, _kept_key(path), 512, PAGES) is not None

    # Built from other lists: a shard that lost its codes (its pages now uncoded) makes the kept lists stale.
    manifest = read_manifest(index_dir)
    last = manifest.shards[-1]
    del last.files[codes_kind(manifest.settings["ivf"]["generation"])]
    write_manifest(index_dir, manifest)
    fewer = EmbeddedVectorIndex(index_dir, read_manifest(index_dir), num_threads=1)
    assert fewer.lists.uncoded.tolist() == list(range(PAGES - len(last.page_ids), PAGES))
    assert int((fewer.lists.pages >= 0).sum()) == (PAGES - len(last.page_ids)) * POOL

    # An index the process cannot write to: the lists are built at every open, with a warning.
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    caplog.clear()
    monkeypatch.setattr(ListArrays, "save", read_only)
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="search_engine.ivf"):
        opened = EmbeddedVectorIndex(index_dir, read_manifest(index_dir), num_threads=1)
    assert opened.lists.uncoded.tolist() == fewer.lists.uncoded.tolist() and not path.exists()
    assert "could not keep the lists" in caplog.text


def _kept_key(path: Path) -> str:
    with np.load(path) as stored:
        return str(stored["key"])


def test_new_shards_are_searchable_after_their_commit_coded_or_not(corpus, tmp_path: Path):
    index_dir, _, _, _, topics, rng = corpus
    manifest = read_manifest(index_dir)
    generation = manifest.settings["ivf"]["generation"]
    # An ingest commit after the build: ingestion codes the new shard against the existing codebook.
    config = IngestConfig(dataset_dir=tmp_path, index_dir=index_dir, backend="colqwen", model="test-model")
    writer = _IndexWriter(config, manifest)
    new_pages, new_concepts = _topic_pages(rng, 12, topics, PAGES)
    entry = DocumentEntry(doc_stem="fresh", source="fresh.pdf", content_hash="0", num_pages=12, shard="")
    rendered = [RenderedPage(f"fresh_{i + 1}", "fresh", i + 1, tmp_path / f"fresh_{i + 1}.png", "") for i in range(12)]
    writer.append([_PendingDocument(entry=entry, pages=rendered, vectors=new_pages)], {})
    coded = read_manifest(index_dir).shards[-1]
    assert codes_kind(generation) in coded.files
    # A shard committed without codes (as before any build): its pages are searched by the pooled scan.
    manifest = read_manifest(index_dir)
    late_pages, late_concepts = _topic_pages(rng, 6, topics, PAGES + 12)
    _write_shard(index_dir, manifest, manifest.next_shard, late_pages, PAGES + 12)
    manifest.generation += 1
    write_manifest(index_dir, manifest)

    # search_vectors takes query embeddings directly: the encoder is only asked for its identity.
    encoder = SimpleNamespace(model_name="test-model", fingerprint=None)
    settings = SearchSettings(mode="approx", candidates=90, probe=8, prefilter=180, residual_bits=4)
    searcher = Searcher(index_dir, settings=settings, encoder=encoder)
    index = searcher.snapshot()._vectors
    assert index.has_lists and index._lists.uncoded.tolist() == list(range(PAGES + 12, PAGES + 18))
    assert index._lists.codec.nbits == 4 and index._lists.residuals.shape[1:] == (DIM * 4 // 8, 16)
    assert int((index._lists.pages >= 0).sum()) == (PAGES + 12) * POOL  # every coded pooled vector, once
    with pytest.raises(ValueError, match="residual_bits must be one of"):
        SearchSettings(residual_bits=3)
    for page, concepts in [(PAGES + 3, new_concepts[3]), (PAGES + 14, late_concepts[2])]:
        hits = searcher.snapshot().search_vectors([_query(rng, concepts)], 3)[0]
        assert hits[0].idx == page

    # A rebuild codes every shard with a new codebook and removes the old codebook and codes.
    report = build_ivf(index_dir, num_centroids=256, progress=False)
    assert report["generation"] == generation + 1
    assert not (index_dir / codebook_file(generation)).exists()
    assert not list(index_dir.glob(f"*.{codes_kind(generation)}")) and not list(index_dir.glob("ivf-lists-*"))
    rebuilt = EmbeddedVectorIndex(index_dir, read_manifest(index_dir))
    assert len(rebuilt._lists.uncoded) == 0 and rebuilt.num_pages == PAGES + 18
