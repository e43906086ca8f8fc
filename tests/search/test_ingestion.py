"""Incremental ingestion, crash-resume after kill -9 of a real subprocess, and consistent reads during an ingest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search_engine.ingestion import IngestConfig, ingest
from search_engine.manifest import IndexMismatchError, read_manifest
from search_engine.searcher import Searcher
from search_engine.shards import load_texts

REPO_ROOT = Path(__file__).resolve().parents[2]


def _index_content(index_dir: Path) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    manifest = read_manifest(index_dir)
    texts = [t for shard in manifest.shards for t in load_texts(index_dir, shard, verify=True)]
    docs = [(d.doc_stem, d.content_hash) for d in manifest.documents]
    return manifest.page_ids(), texts, docs


def test_incremental_add_change_remove(make_pdf, tmp_path: Path):
    corpus = tmp_path / "corpus"
    make_pdf(corpus / "alpha.pdf", ["alpha one", "alpha two"])
    make_pdf(corpus / "beta.pdf", ["beta one"])
    config = IngestConfig(dataset_dir=corpus, dpi=72, progress=False)
    first = ingest(config)
    assert first.added == ["alpha", "beta"] and first.pages_added == 3

    make_pdf(corpus / "gamma.pdf", ["gamma one"])
    second = ingest(config)
    assert second.added == ["gamma"] and second.pages_added == 1 and sorted(second.unchanged) == ["alpha", "beta"]

    make_pdf(corpus / "alpha.pdf", ["alpha rewritten"])
    (corpus / "beta.pdf").unlink()
    third = ingest(config)
    assert third.added == ["alpha"] and third.removed == ["beta"] and third.unchanged == ["gamma"]
    page_ids, texts, _ = _index_content(config.index_dir)
    assert sorted(page_ids) == ["alpha_1", "gamma_1"]
    assert "alpha rewritten" in texts[page_ids.index("alpha_1")]
    # No file is left that the manifest does not name.
    names = {p.name for p in config.index_dir.iterdir()}
    shards = {f"{s.name}.texts.json" for s in read_manifest(config.index_dir).shards}
    assert names == shards | {"manifest.json"}

    assert ingest(config).added == []


def test_updating_an_index_with_another_backend_is_refused(make_pdf, tmp_path: Path):
    corpus = tmp_path / "corpus"
    make_pdf(corpus / "alpha.pdf", ["alpha"])
    ingest(IngestConfig(dataset_dir=corpus, dpi=72, progress=False))
    with pytest.raises(IndexMismatchError, match="built with backend 'bm25'"):
        Searcher(corpus / "index", backend="colqwen")


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_index(make_pdf, tmp_path: Path):
    corpus = tmp_path / "corpus"
    num_docs = 80
    for n in range(num_docs):
        make_pdf(corpus / f"doc{n:03d}.pdf", [f"document {n} page one", f"document {n} page two token{n}"])
    index_dir = tmp_path / "killed_index"
    command = [
        sys.executable,
        str(REPO_ROOT / "search_engine" / "ingestion.py"),
        "--dataset_dir", str(corpus),
        "--index_dir", str(index_dir),
        "--pages_dir", str(tmp_path / "killed_pages"),
        "--dpi", "150",
        "--shard_pages", "2",
        "--no_progress",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            committed = len(json.loads((index_dir / "manifest.json").read_bytes())["documents"])
        except (FileNotFoundError, json.JSONDecodeError):
            committed = 0
        if committed >= 3:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    partial = read_manifest(index_dir)
    assert 3 <= len(partial.documents) < num_docs

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert len(report["added"]) == num_docs - len(partial.documents)

    reference = IngestConfig(
        dataset_dir=corpus, index_dir=tmp_path / "ref_index", pages_dir=tmp_path / "ref_pages", dpi=150, progress=False
    )
    ingest(reference)
    killed_ids, killed_texts, killed_docs = _index_content(index_dir)
    ref_ids, ref_texts, ref_docs = _index_content(reference.index_dir)
    assert killed_ids == ref_ids and len(set(killed_ids)) == 2 * num_docs
    assert killed_texts == ref_texts and killed_docs == ref_docs
    assert not [p for p in index_dir.iterdir() if p.name.endswith(".tmp")]
    for page_id in ref_ids[:: num_docs // 4]:
        assert (tmp_path / "killed_pages" / f"{page_id}.png").read_bytes() == (
            tmp_path / "ref_pages" / f"{page_id}.png"
        ).read_bytes()
