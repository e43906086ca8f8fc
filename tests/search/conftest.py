"""Fixtures for the search engine tests: PDFs made on the fly, the sample corpus, a live service on loopback."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from unidoc_rl.standins.serving import ThreadedUvicorn

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CORPUS = REPO_ROOT / "examples" / "corpus"
SAMPLES_JSON = REPO_ROOT / "examples" / "samples.json"


def write_pdf(path: Path, pages: list[str], user_password: str | None = None) -> Path:
    """A PDF with one line of text per page (a real text layer), optionally encrypted with a user password."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=(300, 200))
    pdf.set_auto_page_break(False)
    for text in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.set_xy(20, 40)
        pdf.multi_cell(260, 14, text)
    if user_password is not None:
        pdf.set_encryption(owner_password="owner", user_password=user_password)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


@pytest.fixture
def make_pdf() -> Callable[..., Path]:
    return write_pdf


@pytest.fixture
def sample_corpus(tmp_path: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(SAMPLE_CORPUS, target)
    return target


def random_pages(rng: np.random.Generator, lengths: list[int], dim: int) -> list[np.ndarray]:
    pages = []
    for length in lengths:
        vectors = rng.standard_normal((length, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        pages.append(vectors.astype(np.float16))
    return pages


@pytest.fixture
def make_pages() -> Callable[..., list[np.ndarray]]:
    """random_pages(rng, lengths, dim): L2-normalized fp16 page matrices."""
    return random_pages


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Run `app` with uvicorn on an ephemeral 127.0.0.1 port in a background thread; yields the base URL."""
    with ThreadedUvicorn(app, lifespan="off") as server:
        yield server.url


@pytest.fixture
def run_service() -> Callable:
    """serve(app) as a context manager yielding the base URL of the running service."""
    return serve
