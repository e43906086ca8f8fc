"""Centroid inverted lists over the pooled page vectors: the sublinear first stage of the approximate mode.

A codebook of K centroids is trained (k-means) on a sample of every page's pooled vectors; each pooled vector is
stored as the 16-bit id of its nearest centroid (`shard-*.ivfNNNNNN.npy`, [pages, pool_size] uint16, 2 bytes per
pooled vector instead of 256). At open, the codes are held in memory and become inverted lists: centroid -> pages
having a pooled vector assigned to it. A query vector q_i probes its `probe` best centroids (by <q_i, c>); the pages
in the probed lists are the candidates, each scored from its codes alone: sum over query vectors of the max over
the page's codes c of <q_i, c> (PLAID's centroid interaction; a [K, query vectors] table of inner products, then
the C kernel `centroid_interaction` in `_kernel.c`, torch without it). No float vector is read. The `prefilter`
best pages go on to MaxSim against their pooled vectors and the best of those to exact MaxSim over the full
vectors (vector_index.py).

The work per query is the probed lists (about Lq * probe * pages * pool_size / K entries, marked in a bitmap) plus
pool_size table lookups per candidate page: a few tens of milliseconds for 100,000 pages on one core.

Incremental: `build_ivf` trains a codebook and codes every shard (one manifest commit). Shards committed later by
ingestion are coded against the same codebook at their commit (`encode_shard`); a shard without codes for the
current codebook (written before it) is not in the lists, and its pages join every query's prefilter set, so they
are searchable at once and cost a pooled scan of that remainder until the next build.

    python search_engine/ivf.py --index_dir DATASET_DIR/index            # (re)build the codebook and codes
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from search_engine.manifest import FileEntry, IndexFormatError, Manifest, ShardEntry, read_manifest, write_manifest
from search_engine.shards import load_pooled, shard_path
from unidoc_rl.common.atomic import atomic_write, sha256_file

try:
    from search_engine import _kernel
except ImportError:  # the optional extension was not built here
    _kernel = None
if not hasattr(_kernel, "centroid_interaction"):  # a build from before the first stage had a kernel
    _kernel = None

logger = logging.getLogger("search_engine.ivf")

IVF_SETTING = "ivf"
# Centroids probed per query vector, and pages passed from the lists to pooled MaxSim (defaults of SearchSettings).
DEFAULT_PROBE = 8
DEFAULT_PREFILTER = 8192
MAX_CENTROIDS = 1 << 16  # codes are uint16
DEFAULT_ITERATIONS = 8
# Training sample: this many pooled vectors per centroid (k-means needs a few dozen per cluster).
SAMPLE_PER_CENTROID = 48
_ASSIGN_CHUNK = 1 << 15
# Pages per step of the torch fallback of centroid interaction (and the least pages worth a second thread).
_INTERACTION_CHUNK = 4096


@functools.cache
def _pool(num_threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(num_threads, thread_name_prefix="ivf")


def default_num_centroids(num_vectors: int) -> int:
    """A power of two near 2 * sqrt(pooled vectors): lists of about sqrt(n) / 2 entries; 65,536 at most."""
    target = 2.0 * np.sqrt(max(1, num_vectors))
    return int(min(MAX_CENTROIDS, max(16, 2 ** round(np.log2(target)))))


def codes_kind(generation: int) -> str:
    return f"ivf{generation:06d}.npy"


def codebook_file(generation: int) -> str:
    return f"ivf-{generation:06d}.codebook.npy"


@torch.no_grad()
def assign(vectors: np.ndarray, codebook: torch.Tensor) -> np.ndarray:
    """[n, D] vectors -> [n] uint16 ids of the centroid with the largest inner product."""
    codes = np.empty(len(vectors), dtype=np.uint16)
    for start in range(0, len(vectors), _ASSIGN_CHUNK):
        chunk = torch.from_numpy(np.asarray(vectors[start : start + _ASSIGN_CHUNK], dtype=np.float32))
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


class InvertedLists:
    """centroid -> pages, every coded page's codes, and the centroid-interaction page scores of a query."""

    def __init__(
        self, codebook: np.ndarray, page_codes: list[tuple[int, np.ndarray]], num_pages: int, num_threads: int = 1
    ):
        """page_codes: (first page index, [pages, pool_size] codes) per coded shard; other pages are uncoded."""
        self.codebook = torch.from_numpy(np.ascontiguousarray(codebook, dtype=np.float32))
        self.num_pages = num_pages
        self.num_threads = max(1, num_threads)
        widths = {codes.shape[1] for _, codes in page_codes}
        if len(widths) > 1:
            raise IndexFormatError(f"shards have codes of different widths {sorted(widths)}")
        self.codes = np.zeros((num_pages, widths.pop() if widths else 1), dtype=np.uint16)
        coded = np.zeros(num_pages, dtype=bool)
        keys = []
        for first, codes in page_codes:
            if len(codes) and int(codes.max()) >= len(codebook):
                raise IndexFormatError(f"codes reach {int(codes.max())} but the codebook has {len(codebook)}")
            pages = np.arange(first, first + len(codes), dtype=np.int64)
            coded[first : first + len(codes)] = True
            self.codes[first : first + len(codes)] = codes
            keys.append(codes.astype(np.int64) * num_pages + pages[:, None])
        keys = np.unique(np.concatenate([k.ravel() for k in keys])) if keys else np.zeros(0, np.int64)
        self.list_pages = (keys % max(1, num_pages)).astype(np.int32)
        self.list_offsets = np.searchsorted(keys // max(1, num_pages), np.arange(len(codebook) + 1)).astype(np.int64)
        self.coded_pages = np.flatnonzero(coded)
        self.uncoded = np.flatnonzero(~coded)

    @property
    def resident_bytes(self) -> int:
        arrays = (self.codes, self.list_pages, self.list_offsets, self.coded_pages, self.uncoded)
        return self.codebook.numel() * 4 + sum(a.nbytes for a in arrays)

    def probed_pages(self, query: np.ndarray, probe: int) -> np.ndarray:
        """Ascending coded pages with a pooled vector in one of the lists of some query vector's `probe` nearest
        centroids (every coded page when `probe` reaches the codebook's size)."""
        query = query[np.any(query != 0, axis=1)]
        if probe >= len(self.codebook):
            return self.coded_pages
        scores = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)) @ self.codebook.T
        centroids = np.unique(torch.topk(scores, probe, dim=1).indices.numpy())
        starts, stops = self.list_offsets[centroids], self.list_offsets[centroids + 1]
        lengths = stops - starts
        positions = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths - starts, lengths)
        found = np.zeros(self.num_pages, dtype=bool)
        found[self.list_pages[positions]] = True
        return np.flatnonzero(found)

    @torch.no_grad()
    def interaction_scores(self, query: np.ndarray, pages: np.ndarray) -> np.ndarray:
        """[Lq, D] query (zero rows add 0) -> float32 scores of `pages` (coded): per page, the sum over query
        vectors of the best inner product with the centroids of the page's codes (PLAID's centroid interaction
        over all of the page's codes)."""
        width = -(-len(query) // 8) * 8  # padded with zero rows (a multiple of 8 suits the kernel's registers)
        padded = np.zeros((width, query.shape[1]), dtype=np.float32)
        padded[: len(query)] = query
        table = np.ascontiguousarray((self.codebook @ torch.from_numpy(padded).T).numpy())
        pages = np.ascontiguousarray(pages, dtype=np.int64)
        scores = np.empty(len(pages), dtype=np.float32)
        if _kernel is None:
            lookup = torch.from_numpy(table)
            for start in range(0, len(pages), _INTERACTION_CHUNK):
                chosen = torch.from_numpy(self.codes[pages[start : start + _INTERACTION_CHUNK]].astype(np.int64))
                scores[start : start + len(chosen)] = lookup[chosen].amax(dim=1).sum(dim=1).numpy()
            return scores
        bounds = np.linspace(0, len(pages), self.num_threads + 1).astype(np.int64)
        top = len(self.codebook) - 1

        def work(a: int, b: int) -> None:
            _kernel.centroid_interaction(table, width, self.codes, self.codes.shape[1], top, scores[a:b], pages[a:b])

        if self.num_threads == 1 or len(pages) < 2 * _INTERACTION_CHUNK:
            work(0, len(pages))
        else:
            for future in [
                _pool(self.num_threads).submit(work, a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
            ]:
                future.result()
        return scores

    def shortlist(self, query: np.ndarray, probe: int, count: int) -> np.ndarray:
        """The `count` probed pages with the best centroid-interaction scores (from all coded pages when fewer than
        `count` are probed), and every uncoded page; ascending."""
        pages = self.probed_pages(query, probe)
        if len(pages) < count:
            pages = self.coded_pages
        if len(pages) > count:
            scores = torch.from_numpy(self.interaction_scores(query, pages))
            pages = np.sort(pages[torch.topk(scores, count).indices.numpy()])
        return np.union1d(pages, self.uncoded).astype(np.int64)


def open_lists(index_dir: Path, manifest: Manifest, verify: bool = False, num_threads: int = 1) -> InvertedLists | None:
    info = IvfInfo.of(manifest)
    if info is None:
        return None
    codebook = load_codebook(index_dir, info, int(manifest.dim), verify)
    page_codes, first = [], 0
    for shard in manifest.shards:
        codes = load_codes(index_dir, manifest, shard, verify)
        if codes is not None:
            page_codes.append((first, codes))
        first += len(shard.page_ids)
    return InvertedLists(codebook, page_codes, manifest.num_pages, num_threads)


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
    for path in list(index_dir.glob("ivf-*.codebook.npy")) + list(index_dir.glob("shard-*.ivf*.npy")):
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
