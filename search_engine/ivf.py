"""Centroid inverted lists over the pooled page vectors: the sublinear first stage of the approximate mode.

A codebook of K centroids is trained (k-means) on a sample of every page's pooled vectors; each pooled vector is
stored as the 16-bit id of its nearest centroid (`shard-*.ivfNNNNNN.npy`, [pages, pool_size] uint16). At open, the
pooled vectors are sorted into their centroids' lists with their residuals (vector - centroid) compressed to a few
bits per dimension (kept beside the index in `ivf-lists-Nbit.npz`, so only the first open after a change builds
them), and a query is scored WARP-style from the lists its vectors probe (residuals.py). The
`prefilter` best pages go on to MaxSim against their pooled vectors and the best of those to exact MaxSim over
the full vectors (vector_index.py).

Incremental: `build_ivf` trains a codebook and codes every shard (one manifest commit). Shards committed later by
ingestion are coded against the same codebook at their commit (`encode_shard`); a shard without codes for the
current codebook (written before it) is not in the lists, and its pages join every query's prefilter set, so they
are searchable at once and cost a pooled scan of that remainder until the next build.

    python search_engine/ivf.py --index_dir DATASET_DIR/index            # (re)build the codebook and codes
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from search_engine.manifest import FileEntry, IndexFormatError, Manifest, ShardEntry, read_manifest, write_manifest
from search_engine.residuals import DEFAULT_NBITS, InvertedLists, ListArrays
from search_engine.shards import POOLED, load_pooled, shard_path
from unidoc_rl.common.atomic import atomic_write, sha256_file

logger = logging.getLogger("search_engine.ivf")

IVF_SETTING = "ivf"
# Centroids probed per query vector, and pages passed from the lists to pooled MaxSim (defaults of SearchSettings).
DEFAULT_PROBE = 64
DEFAULT_PREFILTER = 1024
MAX_CENTROIDS = 1 << 16  # codes are uint16
DEFAULT_ITERATIONS = 8
# Training sample: this many pooled vectors per centroid (k-means needs a few dozen per cluster).
SAMPLE_PER_CENTROID = 48
# Scores materialized per assignment step (vectors x centroids): 16M floats (64 MB) keep the argmax cache-friendly.
_ASSIGN_SCORES = 1 << 24


def default_num_centroids(num_vectors: int) -> int:
    """A power of two near 8 * sqrt(pooled vectors) (lists of about sqrt(n) / 8 entries; 65,536 at most): the
    residual stage's work is the probed lists' entries, so finer lists make each probe cheaper."""
    target = 8.0 * np.sqrt(max(1, num_vectors))
    return int(min(MAX_CENTROIDS, max(16, 2 ** round(np.log2(target)))))


def codes_kind(generation: int) -> str:
    return f"ivf{generation:06d}.npy"


def codebook_file(generation: int) -> str:
    return f"ivf-{generation:06d}.codebook.npy"


def lists_file(nbits: int) -> str:
    """The lists as the last open built them with `nbits`-bit residuals (residuals.ListArrays): not in the
    manifest, rebuilt whenever what they were built from changed."""
    return f"ivf-lists-{nbits}bit.npz"


@torch.no_grad()
def assign(vectors: np.ndarray, codebook: torch.Tensor) -> np.ndarray:
    """[n, D] vectors -> [n] uint16 ids of the centroid with the largest inner product."""
    codes = np.empty(len(vectors), dtype=np.uint16)
    step = max(256, _ASSIGN_SCORES // len(codebook))
    for start in range(0, len(vectors), step):
        chunk = torch.from_numpy(np.asarray(vectors[start : start + step], dtype=np.float32))
        codes[start : start + len(chunk)] = (chunk @ codebook.T).argmax(dim=1).numpy().astype(np.uint16)
    return codes


@torch.no_grad()
def train_codebook(sample: np.ndarray, num_centroids: int, iterations: int = DEFAULT_ITERATIONS, seed: int = 0):
    """k-means with inner-product assignment on [n, D] vectors; each centroid at its members' mean norm (as the
    per-page pooling does). Returns [K, D] float32."""
    vectors = torch.from_numpy(np.asarray(sample, dtype=np.float32))
    if len(vectors) < num_centroids:
        raise ValueError(f"{len(vectors)} vectors cannot train {num_centroids} centroids")
    generator = torch.Generator().manual_seed(seed)
    centroids = vectors[torch.randperm(len(vectors), generator=generator)[:num_centroids]].clone()
    norms = vectors.norm(dim=1)
    for _ in range(iterations):
        codes = torch.from_numpy(assign(sample, centroids).astype(np.int64))
        sums = torch.zeros_like(centroids).index_add_(0, codes, vectors)
        counts = torch.zeros(num_centroids).index_add_(0, codes, torch.ones(len(vectors)))
        norm_sums = torch.zeros(num_centroids).index_add_(0, codes, norms)
        means = sums / counts.clamp(min=1).unsqueeze(1)
        scale = (norm_sums / counts.clamp(min=1)) / means.norm(dim=1).clamp(min=1e-12)
        # An empty cluster is reseeded on a random sample vector.
        reseed = vectors[torch.randint(len(vectors), (num_centroids,), generator=generator)]
        centroids = torch.where((counts > 0).unsqueeze(1), means * scale.unsqueeze(1), reseed)
    return centroids.numpy()


@dataclass(frozen=True)
class IvfInfo:
    """What the manifest records about the current codebook (settings["ivf"])."""

    generation: int
    centroids: int
    codebook: FileEntry

    @classmethod
    def of(cls, manifest: Manifest) -> IvfInfo | None:
        data = manifest.settings.get(IVF_SETTING)
        if not data:
            return None
        try:
            return cls(int(data["generation"]), int(data["centroids"]), FileEntry(**data["codebook"]))
        except (KeyError, TypeError) as error:
            raise IndexFormatError(f"malformed ivf settings in the manifest: {error}") from error

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "centroids": self.centroids,
            "codebook": {"sha256": self.codebook.sha256, "bytes": self.codebook.bytes},
        }


def load_codebook(index_dir: Path, info: IvfInfo, dim: int, verify: bool = False) -> np.ndarray:
    path = Path(index_dir) / codebook_file(info.generation)
    if path.stat().st_size != info.codebook.bytes or (verify and sha256_file(path) != info.codebook.sha256):
        raise IndexFormatError(f"{path}: does not match the manifest (size or checksum)")
    codebook = np.load(path, allow_pickle=False)
    if codebook.shape != (info.centroids, dim) or codebook.dtype != np.float32:
        raise IndexFormatError(
            f"{path}: codebook is {codebook.dtype}{codebook.shape}, expected float32({info.centroids}, {dim})"
        )
    return codebook


def _save(path: Path, array: np.ndarray) -> FileEntry:
    atomic_write(path, lambda handle: np.save(handle, np.ascontiguousarray(array), allow_pickle=False))
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)


def encode_shard(index_dir: Path, manifest: Manifest, shard: ShardEntry, pooled: np.ndarray | None) -> None:
    """Code a new shard's pooled vectors against the index's codebook (nothing when it has none)."""
    info = IvfInfo.of(manifest)
    if info is None or pooled is None:
        return
    codebook = torch.from_numpy(load_codebook(index_dir, info, int(manifest.dim)))
    codes = assign(pooled.reshape(-1, pooled.shape[2]), codebook).reshape(pooled.shape[:2])
    kind = codes_kind(info.generation)
    shard.files[kind] = _save(shard_path(index_dir, shard.name, kind), codes)


def load_codes(index_dir: Path, manifest: Manifest, shard: ShardEntry, verify: bool = False) -> np.ndarray | None:
    """The shard's codes for the current codebook, or None when it was written before that codebook."""
    info = IvfInfo.of(manifest)
    kind = codes_kind(info.generation) if info else None
    if kind is None or kind not in shard.files:
        return None
    path = shard_path(index_dir, shard.name, kind)
    if path.stat().st_size != shard.files[kind].bytes or (verify and sha256_file(path) != shard.files[kind].sha256):
        raise IndexFormatError(f"{path}: does not match the manifest (size or checksum)")
    codes = np.load(path, allow_pickle=False)
    if codes.dtype != np.uint16 or codes.ndim != 2 or codes.shape[0] != len(shard.page_ids):
        raise IndexFormatError(f"{path}: codes are {codes.dtype}{codes.shape} for {len(shard.page_ids)} pages")
    return codes


def open_lists(
    index_dir: Path,
    manifest: Manifest,
    pooled: list[np.ndarray],
    verify: bool = False,
    nbits: int = DEFAULT_NBITS,
    num_threads: int = 1,
) -> InvertedLists | None:
    """The index's lists with residuals of `nbits` per dimension (None without a codebook); `pooled`: every
    shard's pooled vectors, in manifest order."""
    info = IvfInfo.of(manifest)
    if info is None:
        return None
    codebook = load_codebook(index_dir, info, int(manifest.dim), verify)
    page_codes, page_pooled, coded_shards, first = [], [], [], 0
    for shard, vectors in zip(manifest.shards, pooled, strict=True):
        codes = load_codes(index_dir, manifest, shard, verify)
        if codes is not None:
            if codes.shape != vectors.shape[:2]:
                raise IndexFormatError(f"{shard.name}: codes {codes.shape} do not match pooled {vectors.shape[:2]}")
            page_codes.append((first, codes))
            page_pooled.append(vectors)
            coded_shards.append(
                [shard.name, first, shard.files[codes_kind(info.generation)].sha256, shard.files[POOLED].sha256]
            )
        first += len(shard.page_ids)
    # What the lists are built from: the codebook, the residual width and every coded shard's codes and pooled
    # vectors at its place (the manifest's checksums of them).
    key = json.dumps(
        {"codebook": info.codebook.sha256, "nbits": nbits, "num_pages": manifest.num_pages, "shards": coded_shards}
    )
    path = Path(index_dir) / lists_file(nbits)
    kept = ListArrays.load(path, key, info.centroids, manifest.num_pages)
    lists = InvertedLists(codebook, page_codes, page_pooled, manifest.num_pages, nbits, num_threads, kept)
    if kept is None:
        try:
            lists.arrays.save(path, key)
        except OSError as error:  # a read-only index: every open builds them
            logger.warning("could not keep the lists at %s (%s); the next open builds them again", path, error)
    return lists


def build_ivf(
    index_dir: Path,
    num_centroids: int | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a new codebook on the index's pooled vectors, code every shard, commit; returns a report.

    Run it when no ingest is running on the same index (both commit manifests)."""
    started = time.perf_counter()
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    if manifest.backend != "colqwen" or manifest.store != "embedded" or not manifest.settings.get("pool_size"):
        raise ValueError(f"{index_dir}: inverted lists need an embedded colqwen index with pooled vectors")
    dim = int(manifest.dim)
    pooled = [load_pooled(index_dir, shard, dim) for shard in manifest.shards]
    if not pooled or any(p is None for p in pooled):
        raise ValueError(f"{index_dir}: some shards have no pooled vectors; re-ingest with --pool_size > 0")
    sizes = np.array([p.shape[0] * p.shape[1] for p in pooled])
    total = int(sizes.sum())
    num_centroids = num_centroids or default_num_centroids(total)
    if not 1 <= num_centroids <= MAX_CENTROIDS:
        raise ValueError(f"num_centroids must be in [1, {MAX_CENTROIDS}]")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(total, num_centroids * SAMPLE_PER_CENTROID), replace=False))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    sample = np.concatenate(
        [
            np.asarray(p.reshape(-1, dim)[picks[(picks >= a) & (picks < b)] - a], dtype=np.float32)
            for p, a, b in zip(pooled, bounds[:-1], bounds[1:], strict=True)
        ]
    )
    codebook = train_codebook(sample, num_centroids, iterations, seed)
    trained_s = time.perf_counter() - started
    previous = IvfInfo.of(manifest)
    generation = (previous.generation if previous else 0) + 1
    entry = _save(index_dir / codebook_file(generation), codebook)
    manifest.settings[IVF_SETTING] = IvfInfo(generation, num_centroids, entry).to_json()
    codebook_tensor = torch.from_numpy(codebook)
    for shard, vectors in tqdm(
        list(zip(manifest.shards, pooled, strict=True)), desc="ivf codes", unit="shard", disable=not progress
    ):
        codes = assign(vectors.reshape(-1, dim), codebook_tensor).reshape(vectors.shape[:2])
        for kind in [k for k in shard.files if k.startswith("ivf")]:
            del shard.files[kind]
        kind = codes_kind(generation)
        shard.files[kind] = _save(shard_path(index_dir, shard.name, kind), codes)
    manifest.generation += 1
    write_manifest(index_dir, manifest)
    keep = {f"{shard.name}.{kind}" for shard in manifest.shards for kind in shard.files} | {codebook_file(generation)}
    stale = ["ivf-*.codebook.npy", "shard-*.ivf*.npy", "ivf-lists-*bit.npz"]
    for path in [path for pattern in stale for path in index_dir.glob(pattern)]:
        if path.name not in keep:
            path.unlink(missing_ok=True)
    disk = sum((index_dir / name).stat().st_size for name in keep if name.startswith("ivf") or ".ivf" in name)
    return {
        "pooled_vectors": total,
        "centroids": num_centroids,
        "generation": generation,
        "train_s": round(trained_s, 1),
        "build_s": round(time.perf_counter() - started, 1),
        "disk_bytes": disk,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index_dir", required=True, help="an embedded colqwen index with pooled vectors")
    parser.add_argument("--centroids", type=int, default=None, help="codebook size (default: about 2 sqrt(n))")
    parser.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="k-means iterations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(json.dumps(build_ivf(Path(args.index_dir), args.centroids, args.iterations, args.seed)))


if __name__ == "__main__":
    main()
