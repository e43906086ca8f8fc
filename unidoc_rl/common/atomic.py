"""Crash-safe file writes: write a temporary sibling, fsync it, rename it over the target, fsync the directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temporary file next to `path`, then make it appear at `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def atomic_directory(target: Path, build: Callable[[Path], None]) -> None:
    """Call `build` on a staging folder next to `target`, then rename it to `target` in one step.

    `target` must not exist (the rename fails with OSError if it is a non-empty folder); a crash leaves only a
    hidden staging folder behind, never a half-built `target`.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        os.replace(staging, target)
        fsync_directory(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=1, sort_keys=True).encode("utf-8"))


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporaries that a killed writer left behind; they are never referenced by a manifest."""
    removed = []
    for candidate in Path(directory).glob(".*.tmp"):
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed
