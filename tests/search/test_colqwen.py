"""End to end with the tiny offline ColQwen2: ingest pages, search, compare with colpali-engine's own scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from search_engine.colqwen import ColQwenEncoder
from search_engine.ingestion import IngestConfig, ingest
from search_engine.manifest import IndexMismatchError, read_manifest
from search_engine.qdrant_index import connect
from search_engine.searcher import IndexSnapshot, Searcher, SearchSettings
from search_engine.shards import load_vectors

QUERIES = ["revenue in Asia", "battery cycles in summer"]


@pytest.fixture(scope="module")
def encoder(tiny_retriever_dir: Path) -> ColQwenEncoder:
    return ColQwenEncoder(tiny_retriever_dir, device="cpu", batch_size=2)


@pytest.fixture
def small_corpus(make_pdf, tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    make_pdf(corpus / "report.pdf", ["Revenue in Asia was 845 million euros.", "A table of costs."])
    folder = corpus / "scan"
    folder.mkdir()
    Image.new("RGB", (120, 90), (200, 30, 30)).save(folder / "1.png")
    return corpus


@pytest.mark.slow
def test_colqwen_ingest_and_search_match_colpali_engine(encoder, small_corpus: Path, tmp_path: Path):
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    config = IngestConfig(dataset_dir=small_corpus, backend="colqwen", model=encoder.model_name, dpi=72, progress=False)
    report = ingest(config, encoder=encoder)
    assert report.added == ["report", "scan"] and report.pages_added == 3
    manifest = read_manifest(config.index_dir)
    assert (manifest.backend, manifest.model, manifest.dim) == ("colqwen", encoder.model_name, encoder.dim)
    assert manifest.model_fingerprint == encoder.fingerprint

    # Stored vectors are the model's page embeddings without padding rows, in fp16.
    images = [Image.open(config.pages_dir / f"{p}.png").convert("RGB") for p in manifest.page_ids()]
    direct = encoder.embed_images(images)
    stored = load_vectors(config.index_dir, manifest.shards[0], encoder.dim)
    counts = manifest.shards[0].token_counts
    assert counts == [d.shape[0] for d in direct]
    np.testing.assert_array_equal(np.asarray(stored), np.concatenate(direct))

    queries = encoder.embed_queries(QUERIES)
    expected = BaseVisualRetrieverProcessor.score_multi_vector(
        [torch.from_numpy(q) for q in queries], [torch.from_numpy(d.astype(np.float32)) for d in direct], device="cpu"
    ).numpy()
    for mode in ("exact", "approx"):
        searcher = Searcher(config.index_dir, config.pages_dir, settings=SearchSettings(mode=mode), encoder=encoder)
        results = searcher.search(QUERIES, 3)
        for row, hits in enumerate(results):
            order = sorted(range(3), key=lambda i: (-expected[row, i], i))
            assert [h.idx for h in hits] == order
            np.testing.assert_allclose([h.score for h in hits], expected[row, order], atol=1e-3)
        assert searcher.health()["backend"] == "colqwen"

    # The same pages through the Qdrant store (local mode) rank the same.
    qdrant_config = IngestConfig(
        dataset_dir=small_corpus, index_dir=tmp_path / "qdrant_index", backend="colqwen", model=encoder.model_name,
        dpi=72, store="qdrant", progress=False,
    )  # fmt: skip
    ingest(qdrant_config, encoder=encoder)
    qdrant_hits = Searcher(qdrant_config.index_dir, config.pages_dir, encoder=encoder).search(QUERIES, 3)
    assert [[h.page_id for h in hits] for hits in qdrant_hits] == [[h.page_id for h in hits] for hits in results]


@pytest.mark.slow
def test_querying_with_another_model_is_refused(encoder, small_corpus: Path, tmp_path: Path):
    from unidoc_rl.standins.tiny_models import TinyRetrieverSpec, tiny_retriever_path

    config = IngestConfig(dataset_dir=small_corpus, backend="colqwen", model=encoder.model_name, dpi=72, progress=False)
    ingest(config, encoder=encoder)
    other = ColQwenEncoder(tiny_retriever_path(spec=TinyRetrieverSpec(seed=1)), device="cpu")
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        Searcher(config.index_dir, config.pages_dir, encoder=other)
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        ingest(config, encoder=other)


@pytest.mark.slow
def test_qdrant_store_finds_the_embedded_top_k_on_the_sample_corpus(encoder, sample_corpus: Path, tmp_path: Path):
    # The bundled sample corpus, embedded by the tiny ColQwen into both stores: Qdrant's prefetch + MaxSim recipe
    # (HNSW over mean vectors, then MaxSim over the multivectors) returns the embedded engine's exact top k when it
    # prefetches every page, and exact MaxSim scores when it prefetches fewer.
    model = encoder.model_name
    embedded = IngestConfig(dataset_dir=sample_corpus, backend="colqwen", model=model, dpi=72, progress=False)
    ingest(embedded, encoder=encoder)
    config = IngestConfig(
        dataset_dir=sample_corpus, index_dir=tmp_path / "qdrant_index", backend="colqwen", model=model, dpi=72,
        store="qdrant", qdrant_recipe="prefetch", progress=False,
    )  # fmt: skip
    ingest(config, encoder=encoder)
    exact = Searcher(embedded.index_dir, embedded.pages_dir, encoder=encoder)
    queries = ["transit ridership", "water quality", "admissions", "rainfall", "battery capacity", "solar panel"]
    expected = exact.search(queries, 5)
    pages = exact.snapshot().num_pages
    scores = exact.snapshot().search_vectors(encoder.embed_queries(queries), pages)
    exact_score = [{h.page_id: h.score for h in hits} for hits in scores]

    manifest = read_manifest(config.index_dir)
    assert manifest.store_options["recipe"] == "prefetch" and pages == len(manifest.page_ids()) > 10
    client = connect(manifest.store_options)
    for limit in (pages, 8):
        manifest.store_options["prefetch_limit"] = limit
        snapshot = IndexSnapshot(config.index_dir, embedded.pages_dir, manifest, SearchSettings(), encoder, client)
        found = snapshot.search_vectors(encoder.embed_queries(queries), 5)
        for row, (mine, theirs) in enumerate(zip(expected, found, strict=True)):
            if limit == pages:
                assert [h.page_id for h in theirs] == [h.page_id for h in mine]
            assert len(theirs) == 5
            for hit in theirs:
                assert hit.score == pytest.approx(exact_score[row][hit.page_id], abs=1e-3)
    client.close()
