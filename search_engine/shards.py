"""Shard files of an embedded index: fp16 page-vector matrices, pooled centroids, page texts.

A shard holds whole documents. Its files are written atomically before the manifest that names them, and are
never modified afterwards (removing a document writes a new shard), so a reader's memory map stays valid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from search_engine.manifest import FileEntry, IndexFormatError, ShardEntry
from unidoc_rl.common.atomic import atomic_write, atomic_write_bytes, sha256_file

VECTORS = "vectors.npy"
POOLED = "pooled.npy"
TEXTS = "texts.json"


def shard_path(index_dir: Path, shard_name: str, kind: str) -> Path:
    return Path(index_dir) / f"{shard_name}.{kind}"


def _file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False))


def write_vector_shard(
    index_dir: Path, name: str, page_ids: list[str], page_vectors: list[np.ndarray], pooled: np.ndarray | None
) -> ShardEntry:
    """Write one shard of multi-vector pages (each [T_i, D]) and, for the approximate mode, their centroids."""
    if len(page_ids) != len(page_vectors):
        raise ValueError("one vector matrix per page is required")
    matrix = np.concatenate([np.asarray(v, dtype=np.float16) for v in page_vectors], axis=0)
    entry = ShardEntry(name=name, page_ids=list(page_ids), token_counts=[int(v.shape[0]) for v in page_vectors])
    path = shard_path(index_dir, name, VECTORS)
    _save_npy(path, matrix)
    entry.files[VECTORS] = _file_entry(path)
    if pooled is not None:
        path = shard_path(index_dir, name, POOLED)
        _save_npy(path, pooled.astype(np.float16))
        entry.files[POOLED] = _file_entry(path)
    return entry


def write_text_shard(index_dir: Path, name: str, page_ids: list[str], texts: list[str]) -> ShardEntry:
    if len(page_ids) != len(texts):
        raise ValueError("one text per page is required")
    path = shard_path(index_dir, name, TEXTS)
    atomic_write_bytes(path, json.dumps(texts, ensure_ascii=False).encode("utf-8"))
    return ShardEntry(name=name, page_ids=list(page_ids), files={TEXTS: _file_entry(path)})


def _check_file(index_dir: Path, shard: ShardEntry, kind: str, verify: bool) -> Path:
    path = shard_path(index_dir, shard.name, kind)
    expected = shard.files.get(kind)
    if expected is None:
        raise IndexFormatError(f"shard {shard.name} has no {kind} file in the manifest")
    size = path.stat().st_size
    if size != expected.bytes:
        raise IndexFormatError(f"{path}: {size} bytes on disk, manifest says {expected.bytes}")
    if verify and sha256_file(path) != expected.sha256:
        raise IndexFormatError(f"{path}: checksum mismatch (file is corrupt)")
    return path


def load_vectors(index_dir: Path, shard: ShardEntry, dim: int, verify: bool = False) -> np.ndarray:
    """Memory-map a shard's [sum T, D] fp16 matrix (no pickle), checking it against the manifest."""
    array = np.load(_check_file(index_dir, shard, VECTORS, verify), mmap_mode="r", allow_pickle=False)
    expected_rows = sum(shard.token_counts or [])
    if array.dtype != np.float16 or array.shape != (expected_rows, dim):
        raise IndexFormatError(
            f"shard {shard.name}: vectors are {array.dtype}{array.shape}, expected float16({expected_rows}, {dim})"
        )
    return array


def load_pooled(index_dir: Path, shard: ShardEntry, dim: int, verify: bool = False) -> np.ndarray | None:
    if POOLED not in shard.files:
        return None
    array = np.load(_check_file(index_dir, shard, POOLED, verify), mmap_mode="r", allow_pickle=False)
    if array.ndim != 3 or array.shape[0] != len(shard.page_ids) or array.shape[2] != dim:
        raise IndexFormatError(f"shard {shard.name}: pooled vectors have shape {array.shape}")
    return array


def load_texts(index_dir: Path, shard: ShardEntry, verify: bool = False) -> list[str]:
    texts = json.loads(_check_file(index_dir, shard, TEXTS, verify).read_bytes())
    if not isinstance(texts, list) or len(texts) != len(shard.page_ids) or not all(isinstance(t, str) for t in texts):
        raise IndexFormatError(f"shard {shard.name}: texts do not match its {len(shard.page_ids)} pages")
    return texts


def referenced_files(shards: list[ShardEntry]) -> set[str]:
    return {f"{shard.name}.{kind}" for shard in shards for kind in shard.files}
