"""Manifest and shard files: round trip, checks against the manifest, no pickle, backend/model mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from search_engine.manifest import (
    IndexFormatError,
    IndexMismatchError,
    IndexNotFoundError,
    Manifest,
    read_manifest,
    write_manifest,
)
from search_engine.shards import load_vectors, write_vector_shard


def _index(tmp_path: Path, make_pages) -> Manifest:
    rng = np.random.default_rng(0)
    manifest = Manifest(backend="colqwen", model="m", model_fingerprint="f" * 64, dim=8)
    manifest.shards.append(
        write_vector_shard(tmp_path, "shard-000000", ["a_1", "a_2"], make_pages(rng, [3, 5], 8), None)
    )
    write_manifest(tmp_path, manifest)
    return manifest


def test_manifest_round_trip_records_backend_model_dims_and_checksums(tmp_path: Path, make_pages):
    manifest = _index(tmp_path, make_pages)
    loaded = read_manifest(tmp_path)
    assert loaded == manifest
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["backend"] == "colqwen" and raw["model"] == "m" and raw["dim"] == 8
    assert raw["shards"][0]["token_counts"] == [3, 5]
    assert len(raw["shards"][0]["files"]["vectors.npy"]["sha256"]) == 64
    vectors = load_vectors(tmp_path, loaded.shards[0], 8, verify=True)
    assert vectors.dtype == np.float16 and vectors.shape == (8, 8) and isinstance(vectors, np.memmap)


def test_mismatched_backend_or_model_is_a_clear_error(tmp_path: Path, make_pages):
    manifest = _index(tmp_path, make_pages)
    with pytest.raises(IndexMismatchError, match="backend 'colqwen'.*cannot be queried with backend 'bm25'"):
        manifest.check_compatible(backend="bm25")
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        manifest.check_compatible(model="other", model_fingerprint="0" * 64)
    manifest.check_compatible(backend="colqwen", model="moved/path", model_fingerprint="f" * 64)


def test_corrupt_or_truncated_shard_is_detected(tmp_path: Path, make_pages):
    manifest = _index(tmp_path, make_pages)
    path = tmp_path / "shard-000000.vectors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    load_vectors(tmp_path, manifest.shards[0], 8)  # size still matches: only the checksum catches it
    with pytest.raises(IndexFormatError, match="checksum"):
        load_vectors(tmp_path, manifest.shards[0], 8, verify=True)
    path.write_bytes(bytes(data[:-4]))
    with pytest.raises(IndexFormatError, match="bytes on disk"):
        load_vectors(tmp_path, manifest.shards[0], 8)


def test_pickled_arrays_are_refused(tmp_path: Path, make_pages):
    manifest = _index(tmp_path, make_pages)
    path = tmp_path / "shard-000000.vectors.npy"
    np.save(path, np.array([{"not": "vectors"}], dtype=object), allow_pickle=True)
    manifest.shards[0].files["vectors.npy"].bytes = path.stat().st_size
    with pytest.raises(ValueError, match="pickle|Python objects"):
        load_vectors(tmp_path, manifest.shards[0], 8)


def test_missing_or_foreign_manifest(tmp_path: Path):
    with pytest.raises(IndexNotFoundError, match="run ingestion first"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(IndexFormatError, match="not a search index manifest"):
        read_manifest(tmp_path)
