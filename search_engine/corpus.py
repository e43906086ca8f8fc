"""The corpus on disk: discover documents, hash them, render their pages to PNG and read their text layer.

A document is a PDF file (any depth under the dataset directory) or a folder of page images (its direct image
children, in natural order). Page ids are `{doc_stem}_{page}` with 1-indexed pages, and every page image is written
to `<pages_dir>/{page_id}.png`, which is the file the search service returns and serves.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from unidoc_rl.common.atomic import atomic_write

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})
PAGES_DIRNAME = "pages"
PNG_COMPRESS_LEVEL = 1


class DocumentError(Exception):
    """A document that cannot be read (broken, encrypted, empty); ingestion reports it and skips it."""


@dataclass(frozen=True)
class SourceDocument:
    doc_stem: str
    path: Path
    kind: str  # "pdf" or "images"
    content_hash: str


@dataclass(frozen=True)
class RenderedPage:
    page_id: str
    doc_stem: str
    page_number: int
    image_path: Path
    text: str


@dataclass(frozen=True)
class SkippedSource:
    path: Path
    reason: str


def page_id_for(doc_stem: str, page_number: int) -> str:
    if page_number < 1:
        raise ValueError(f"page numbers are 1-indexed, got {page_number}")
    return f"{doc_stem}_{page_number}"


def _natural_key(name: str) -> list[object]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _sha256_of_files(paths: list[Path], settings: str) -> str:
    digest = hashlib.sha256(settings.encode("utf-8"))
    for path in paths:
        digest.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _image_children(folder: Path) -> list[Path]:
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(images, key=lambda p: _natural_key(p.name))


def discover_documents(
    dataset_dir: Path, excluded_dirs: list[Path], render_settings: str
) -> tuple[list[SourceDocument], list[SkippedSource]]:
    """All documents under `dataset_dir`, sorted by stem, skipping `excluded_dirs` (page images, indexes).

    `render_settings` enters every content hash, so changing e.g. the dpi re-ingests every document.
    """
    dataset_dir = Path(dataset_dir).resolve()
    excluded = {Path(p).resolve() for p in excluded_dirs}
    found: dict[str, SourceDocument] = {}
    skipped: list[SkippedSource] = []

    def visit(folder: Path) -> None:
        children = sorted(folder.iterdir(), key=lambda p: _natural_key(p.name))
        for child in children:
            if child.name.startswith(".") or child.resolve() in excluded:
                continue
            if child.is_dir():
                images = _image_children(child)
                if images:
                    add(SourceDocument(child.name, child, "images", _sha256_of_files(images, render_settings)))
                visit(child)
            elif child.is_file() and child.suffix.lower() == ".pdf":
                add(SourceDocument(child.stem, child, "pdf", _sha256_of_files([child], render_settings)))

    def add(document: SourceDocument) -> None:
        if document.doc_stem in found:
            first = found[document.doc_stem].path
            skipped.append(
                SkippedSource(document.path, f"duplicate document stem {document.doc_stem!r} (kept {first})")
            )
            return
        found[document.doc_stem] = document

    visit(dataset_dir)
    return sorted(found.values(), key=lambda d: d.doc_stem), skipped


def _save_png(image: Image.Image, path: Path) -> None:
    atomic_write(path, lambda handle: image.save(handle, format="PNG", compress_level=PNG_COMPRESS_LEVEL))


def _render_pdf(document: SourceDocument, pages_dir: Path, dpi: int) -> list[RenderedPage]:
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(document.path))
    except pdfium.PdfiumError as error:
        raise DocumentError(f"{document.path}: cannot open PDF ({error})") from error
    try:
        if len(pdf) == 0:
            raise DocumentError(f"{document.path}: PDF has no pages")
        pages = []
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                image = page.render(scale=dpi / 72.0).to_pil().convert("RGB")
                textpage = page.get_textpage()
                try:
                    text = textpage.get_text_range()
                finally:
                    textpage.close()
            except pdfium.PdfiumError as error:
                raise DocumentError(f"{document.path}: cannot render page {index + 1} ({error})") from error
            finally:
                page.close()
            page_id = page_id_for(document.doc_stem, index + 1)
            image_path = pages_dir / f"{page_id}.png"
            _save_png(image, image_path)
            pages.append(RenderedPage(page_id, document.doc_stem, index + 1, image_path, text))
        return pages
    finally:
        pdf.close()


def _copy_image_folder(document: SourceDocument, pages_dir: Path) -> list[RenderedPage]:
    pages = []
    for number, source in enumerate(_image_children(document.path), start=1):
        try:
            with Image.open(source) as opened:
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise DocumentError(f"{source}: cannot read page image ({error})") from error
        page_id = page_id_for(document.doc_stem, number)
        image_path = pages_dir / f"{page_id}.png"
        _save_png(image, image_path)
        pages.append(RenderedPage(page_id, document.doc_stem, number, image_path, ""))
    if not pages:
        raise DocumentError(f"{document.path}: folder has no page images")
    return pages


def count_pages(document: SourceDocument) -> int:
    """Number of pages, without rendering; raises DocumentError for an unreadable PDF."""
    if document.kind == "images":
        return len(_image_children(document.path))
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(document.path))
    except pdfium.PdfiumError as error:
        raise DocumentError(f"{document.path}: cannot open PDF ({error})") from error
    try:
        return len(pdf)
    finally:
        pdf.close()


def render_document(document: SourceDocument, pages_dir: Path, dpi: int) -> list[RenderedPage]:
    """Write every page of `document` as `<pages_dir>/{page_id}.png`; raises DocumentError if it is unreadable."""
    pages_dir.mkdir(parents=True, exist_ok=True)
    if document.kind == "pdf":
        return _render_pdf(document, pages_dir, dpi)
    if document.kind == "images":
        return _copy_image_folder(document, pages_dir)
    raise ValueError(f"unknown document kind {document.kind!r}")
