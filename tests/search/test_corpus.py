"""Page ids, rendering and document discovery on the sample corpus and on PDFs made here."""

from __future__ import annotations

from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image

from search_engine.corpus import DocumentError, discover_documents, page_id_for, render_document
from search_engine.ingestion import IngestConfig, ingest
from search_engine.manifest import read_manifest


def test_page_ids_are_stem_and_one_indexed_page(sample_corpus: Path):
    config = IngestConfig(dataset_dir=sample_corpus, dpi=72, progress=False)
    report = ingest(config)
    expected = []
    for pdf_path in sorted(sample_corpus.glob("*.pdf")):
        pdf = pdfium.PdfDocument(str(pdf_path))
        expected += [f"{pdf_path.stem}_{n}" for n in range(1, len(pdf) + 1)]
        pdf.close()
    assert read_manifest(config.index_dir).page_ids() == expected
    assert report.num_pages == len(expected) and report.skipped == []
    assert sorted(p.stem for p in config.pages_dir.glob("*.png")) == sorted(expected)


def test_rendering_follows_dpi(sample_corpus: Path, tmp_path: Path):
    document = next(d for d in discover_documents(sample_corpus, [], "dpi=72")[0])
    pdf = pdfium.PdfDocument(str(document.path))
    width_pt, height_pt = pdf[0].get_size()
    pdf.close()
    for dpi in (72, 144):
        pages = render_document(document, tmp_path / f"pages{dpi}", dpi)
        with Image.open(pages[0].image_path) as image:
            assert image.format == "PNG"
            assert abs(image.width - width_pt * dpi / 72) <= 1 and abs(image.height - height_pt * dpi / 72) <= 1
        assert pages[0].page_id == f"{document.doc_stem}_1"
        assert pages[0].image_path == tmp_path / f"pages{dpi}" / f"{document.doc_stem}_1.png"


def test_text_layer_is_read(make_pdf, tmp_path: Path):
    make_pdf(tmp_path / "src" / "memo.pdf", ["alpha bravo", "charlie delta"])
    document = discover_documents(tmp_path / "src", [], "")[0][0]
    pages = render_document(document, tmp_path / "pages", 72)
    assert [p.page_id for p in pages] == ["memo_1", "memo_2"]
    assert "alpha bravo" in pages[0].text and "charlie delta" in pages[1].text


def test_broken_encrypted_and_empty_inputs_are_reported_and_skipped(make_pdf, tmp_path: Path):
    corpus = tmp_path / "corpus"
    make_pdf(corpus / "good.pdf", ["a readable page"])
    make_pdf(corpus / "locked.pdf", ["secret page"], user_password="pw")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a pdf")
    folder = corpus / "scans"
    folder.mkdir()
    for n in (10, 2, 1):
        Image.new("RGB", (40, 60), (n, n, n)).save(folder / f"page{n}.png")
    report = ingest(IngestConfig(dataset_dir=corpus, dpi=72, progress=False))
    skipped = {Path(path).name: reason for path, reason in report.skipped}
    assert set(skipped) == {"locked.pdf", "broken.pdf"}
    assert "password" in skipped["locked.pdf"].lower() or "cannot open" in skipped["locked.pdf"]
    assert report.added == ["good", "scans"]
    manifest = read_manifest(corpus / "index")
    assert manifest.page_ids() == ["good_1", "scans_1", "scans_2", "scans_3"]
    # Image folders keep natural order: page1, page2, page10.
    with Image.open(corpus / "pages" / "scans_3.png") as image:
        assert image.getpixel((0, 0)) == (10, 10, 10)
    assert report.pages_without_text == ["scans_1", "scans_2", "scans_3"]


def test_unreadable_pdf_raises_document_error(tmp_path: Path):
    (tmp_path / "x.pdf").write_bytes(b"garbage")
    document = discover_documents(tmp_path, [], "")[0][0]
    with pytest.raises(DocumentError, match="cannot open PDF"):
        render_document(document, tmp_path / "pages", 72)


def test_page_numbers_start_at_one():
    assert page_id_for("report_2023", 1) == "report_2023_1"
    with pytest.raises(ValueError):
        page_id_for("doc", 0)
