"""The bundled sample corpus (examples/corpus) indexed in a folder of a test's own, for the real search service."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

SAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus"


def index_sample_corpus(folder: Path, names: Iterable[str] | None = None, dpi: int = 72) -> Path:
    """Copy the sample PDFs (all, or those named) into `folder` and index them with bm25; returns `folder`."""
    from search_engine.ingestion import IngestConfig, ingest

    folder.mkdir(parents=True, exist_ok=True)
    for pdf in sorted(SAMPLE_CORPUS / name for name in names) if names else sorted(SAMPLE_CORPUS.glob("*.pdf")):
        shutil.copy(pdf, folder / pdf.name)
    ingest(IngestConfig(dataset_dir=folder, backend="bm25", dpi=dpi, progress=False))
    return folder


@contextlib.contextmanager
def sample_search_service(folder: Path, names: Iterable[str] | None = None) -> Iterator[str]:
    """The search service over the sample corpus (indexed into `folder`) on loopback; yields its URL."""
    from search_engine.search_engine_api import ServiceConfig, create_app
    from unidoc_rl.standins.serving import ThreadedUvicorn

    index_sample_corpus(folder, names)
    with ThreadedUvicorn(create_app(ServiceConfig(dataset_dir=str(folder))), lifespan="off") as server:
        yield server.url
