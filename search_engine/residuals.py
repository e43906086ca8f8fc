"""Residual-compressed pooled vectors scored in place: the first stage of the approximate mode (WARP/PLAID style).

Every pooled vector v is held as its centroid c (its code in the inverted lists, ivf.py) and its residual
r = v - c quantized to `nbits` per dimension: per dimension, 2^nbits buckets cut at the quantiles of that
dimension's residuals, each bucket standing for its mean (its weight). Then <q, v> is approximated by

    <q, c> + sum_d q[d] * weight[d, bucket_d(r)]

and the second term comes from lookup tables: the buckets of 8 / nbits consecutive dimensions share a byte, and per
half byte (nibble) a 16-entry table holds that nibble's contribution for every value, so a pooled vector is never
decompressed (2-bit residuals of 128 dimensions: 32 bytes, 64 lookups). Sixteen entries of a list are scored at
once: their codes are stored transposed, and a 16-entry table is one AVX-512 register, so one permute looks up a
nibble position for all sixteen (FAISS's "fast scan" idea with float tables).

Scoring a query (WARP's reduction): for each query vector q_i, only the lists of its `probe` best centroids are
read; every pooled vector there gets its approximate score against q_i, and a page's maximum for q_i is over its
vectors found there. A page none of whose vectors was found takes the score of q_i's last probed centroid instead
(imputed: its vectors lie in lists whose centroids score lower). A page's score is the sum over query vectors.
The work is the probed lists' entries (about Lq * probe * n / K vectors), not the corpus.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from search_engine.manifest import IndexFormatError
from search_engine.maxsim import PANEL_LANES, available_kernels, in_pool_worker, shared_pool, write_panels
from unidoc_rl.common.atomic import atomic_write

logger = logging.getLogger("search_engine.residuals")

try:
    from search_engine import _kernel
except ImportError:  # the optional extension was not built here
    _kernel = None
if not all(hasattr(_kernel, name) for name in ("probed_residual_scores", "dense_scores", "residual_kernels")):
    _kernel = None  # an older build


def residual_kernels() -> list[str]:
    """Names `InvertedLists.residual_kernel` takes here, best first: the SIMD kernels this CPU runs and "portable"
    (the C loop without SIMD); empty without the extension (the numpy path)."""
    return list(_kernel.residual_kernels()) if _kernel is not None else []


DEFAULT_NBITS = 2
NBITS_CHOICES = (1, 2, 4)  # a code nibble holds whole dimensions
# List entries are stored in blocks of this many (each list padded to whole blocks, padding page -1), a block's
# codes transposed [bytes][BLOCK]: one SIMD register takes one byte position of a whole block.
BLOCK = 16
# Residuals quantized per chunk of pooled vectors at open (bounds the float32 working memory).
_ENCODE_CHUNK = 1 << 18
# Residuals the bucket cutoffs and weights are estimated from.
_FIT_SAMPLE = 1 << 16


@dataclass(frozen=True)
class ResidualCodec:
    """Per-dimension bucket cutoffs [D, 2^nbits - 1] and weights [D, 2^nbits] of `nbits`-bit residuals."""

    nbits: int
    cutoffs: np.ndarray
    weights: np.ndarray

    @property
    def dim(self) -> int:
        return self.weights.shape[0]

    @property
    def code_bytes(self) -> int:
        return self.dim * self.nbits // 8

    @classmethod
    def fit(cls, residuals: np.ndarray, nbits: int = DEFAULT_NBITS) -> ResidualCodec:
        """Cutoffs at the quantiles of each dimension's values in `residuals` [n, D]; weights the buckets' means."""
        if nbits not in NBITS_CHOICES:
            raise ValueError(f"nbits must be one of {NBITS_CHOICES}, got {nbits}")
        residuals = np.asarray(residuals, dtype=np.float32)
        if residuals.ndim != 2 or residuals.shape[1] * nbits % 8 or not len(residuals):
            raise ValueError(f"residuals must be [n >= 1, D] with D * nbits a multiple of 8, got {residuals.shape}")
        buckets = 1 << nbits
        cutoffs = np.quantile(residuals, np.arange(1, buckets) / buckets, axis=0).T.astype(np.float32)
        codec = cls(nbits, np.ascontiguousarray(cutoffs), np.zeros((residuals.shape[1], buckets), np.float32))
        which = codec.buckets(residuals)
        weights = np.zeros((residuals.shape[1], buckets), dtype=np.float64)
        for bucket in range(buckets):
            members = which == bucket
            sums = np.where(members, residuals, 0).sum(axis=0)
            counts = members.sum(axis=0)
            # An empty bucket (a dimension with few distinct values) stands for its cutoff.
            edge = cutoffs[:, min(bucket, buckets - 2)]
            weights[:, bucket] = np.where(counts > 0, sums / np.maximum(counts, 1), edge)
        return cls(nbits, codec.cutoffs, weights.astype(np.float32))

    def buckets(self, residuals: np.ndarray) -> np.ndarray:
        """[n, D] -> [n, D] uint8 bucket of every value: how many of its dimension's cutoffs it reaches."""
        values = torch.from_numpy(np.asarray(residuals, dtype=np.float32))
        found = torch.zeros(values.shape, dtype=torch.uint8)
        for cutoff in torch.from_numpy(self.cutoffs).T:  # one comparison pass per cutoff: 2^nbits - 1 of them
            found += values >= cutoff
        return found.numpy()

    def encode(self, residuals: np.ndarray) -> np.ndarray:
        """[n, D] -> [n, D * nbits / 8] uint8: the bucket of dimension d at bit nbits * (d % per_byte) of byte
        d // per_byte (per_byte = 8 / nbits)."""
        buckets = self.buckets(residuals).astype(np.uint16)
        per_byte = 8 // self.nbits
        shifts = (self.nbits * np.arange(per_byte)).astype(np.uint16)
        packed = (buckets.reshape(len(buckets), -1, per_byte) << shifts).sum(axis=2)
        return packed.astype(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """[n, bytes] uint8 -> [n, D] float32 quantized residuals (what the lookup tables add up)."""
        per_byte = 8 // self.nbits
        shifts = self.nbits * np.arange(per_byte)
        buckets = ((codes[:, :, None].astype(np.int64) >> shifts) & ((1 << self.nbits) - 1)).reshape(len(codes), -1)
        return self.weights[np.arange(self.dim), buckets]

    def nibble_tables(self, query: np.ndarray) -> np.ndarray:
        """[Lq, D] query -> [Lq, bytes, 2, 16] float32: entry [i, b, h, u] = the contribution to <q_i, residual>
        of nibble value u in the low (h = 0) or high (h = 1) half of the code's byte b."""
        per_nibble = 4 // self.nbits
        values = np.asarray(query, dtype=np.float32)[:, :, None] * self.weights[None]  # [Lq, D, 2^nbits]
        values = values.reshape(len(query), self.code_bytes * 2, per_nibble, 1 << self.nbits)
        nibble = np.arange(16)
        tables = np.zeros((len(query), self.code_bytes * 2, 16), dtype=np.float32)
        for slot in range(per_nibble):
            tables += values[:, :, slot, (nibble >> (self.nbits * slot)) & ((1 << self.nbits) - 1)]
        return tables.reshape(len(query), self.code_bytes, 2, 16)


def _residual_sample(codebook: np.ndarray, codes: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
    """Residuals of up to _FIT_SAMPLE pooled vectors spread evenly over the coded ones (rows: each shard's pooled
    vectors [n, D], codes: theirs, concatenated)."""
    if not len(codes):
        return np.zeros((1, codebook.shape[1]), np.float32)
    starts = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    picks = np.unique(np.linspace(0, len(codes) - 1, min(len(codes), _FIT_SAMPLE)).astype(np.int64))
    vectors = np.concatenate(
        [
            np.asarray(shard_rows[picks[(picks >= a) & (picks < b)] - a], dtype=np.float32)
            for shard_rows, a, b in zip(rows, starts[:-1], starts[1:], strict=True)
        ]
    )
    return vectors - codebook[codes[picks]]


@dataclass(frozen=True)
class ListArrays:
    """What an open builds from the pooled vectors (the expensive part: fitting the codec, sorting and coding every
    pooled vector), and what the index keeps on disk so that the next open only reads it (ivf.py)."""

    codec: ResidualCodec
    offsets: np.ndarray  # [K + 1] int64: list c is entries [offsets[c], offsets[c + 1]), whole blocks
    pages: np.ndarray  # [n] int32: each entry's page, -1 for padding
    residuals: np.ndarray  # [n / BLOCK, bytes, BLOCK] uint8: each block's codes transposed

    @classmethod
    def build(
        cls, codebook: np.ndarray, page_codes: list[tuple[int, np.ndarray]], rows: list[np.ndarray], nbits: int
    ) -> ListArrays:
        """page_codes: (first page, [pages, pool_size] codes) per coded shard; rows: their pooled vectors [n, D]."""
        codes = np.concatenate([c.ravel() for _, c in page_codes]) if page_codes else np.zeros(0, np.uint16)
        pages = [np.repeat(np.arange(f, f + len(c), dtype=np.int32), c.shape[1]) for f, c in page_codes]
        codec = ResidualCodec.fit(_residual_sample(codebook, codes, rows), nbits)
        # Each list padded to whole blocks: the sorted entry k of list c goes to padded_start[c] + k - start[c].
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes, minlength=len(codebook)).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(-(-sizes // BLOCK) * BLOCK)]).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        sorted_codes = codes[order].astype(np.int64)
        slots = offsets[sorted_codes] + np.arange(len(codes)) - starts[sorted_codes]
        entry_pages = np.full(offsets[-1], -1, dtype=np.int32)
        entry_pages[slots] = np.concatenate(pages)[order] if pages else np.zeros(0, np.int32)
        entries = np.zeros((offsets[-1], codec.code_bytes), dtype=np.uint8)
        entries[slots] = _encode(codec, codebook, codes, rows)[order]
        residuals = np.ascontiguousarray(entries.reshape(-1, BLOCK, codec.code_bytes).transpose(0, 2, 1))
        return cls(codec, offsets, entry_pages, residuals)

    def save(self, path: Path, key: str) -> None:
        """Write atomically with `key` (what the arrays were built from)."""
        arrays = {"offsets": self.offsets, "pages": self.pages, "residuals": self.residuals}
        codec = {"cutoffs": self.codec.cutoffs, "weights": self.codec.weights, "nbits": np.int64(self.codec.nbits)}
        atomic_write(path, lambda handle: np.savez(handle, key=np.array(key), **arrays, **codec))

    @classmethod
    def load(cls, path: Path, key: str, num_centroids: int, num_pages: int) -> ListArrays | None:
        """The arrays at `path` when they were built from `key` and are whole; else None (absent, stale, damaged:
        the caller builds them again)."""
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as stored:
                if str(stored["key"]) != key:
                    logger.info("%s: built from other lists; building them again", path)
                    return None
                codec = ResidualCodec(int(stored["nbits"]), stored["cutoffs"], stored["weights"])
                arrays = cls(codec, stored["offsets"], stored["pages"], stored["residuals"])
            arrays.check(num_centroids, num_pages)
            return arrays
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("%s: unreadable (%s); building the lists again", path, error)
            return None

    def check(self, num_centroids: int, num_pages: int) -> None:
        """Raise ValueError unless the arrays are lists of `num_centroids` over pages [0, num_pages)."""
        codec, offsets, pages = self.codec, self.offsets, self.pages
        buckets = 1 << codec.nbits
        if (
            codec.nbits not in NBITS_CHOICES
            or codec.cutoffs.shape != (codec.dim, buckets - 1)
            or (codec.weights.shape != (codec.dim, buckets))
        ):
            raise ValueError(f"{codec.nbits}-bit codec: cutoffs {codec.cutoffs.shape}, weights {codec.weights.shape}")
        if offsets.dtype != np.int64 or offsets.shape != (num_centroids + 1,) or offsets[0] != 0:
            raise ValueError(f"offsets {offsets.dtype}{offsets.shape} for {num_centroids} lists")
        if np.any(np.diff(offsets) < 0) or np.any(offsets % BLOCK):
            raise ValueError("offsets decrease or cut a block")
        if pages.dtype != np.int32 or pages.shape != (offsets[-1],) or (len(pages) and not -1 <= pages.min()):
            raise ValueError(f"pages {pages.dtype}{pages.shape} for {offsets[-1]} entries")
        if len(pages) and pages.max() >= num_pages:
            raise ValueError(f"an entry names page {pages.max()} of {num_pages}")
        expected = (offsets[-1] // BLOCK, codec.code_bytes, BLOCK)
        if self.residuals.dtype != np.uint8 or self.residuals.shape != expected:
            raise ValueError(f"residuals {self.residuals.dtype}{self.residuals.shape}, expected uint8{expected}")


def _encode(codec: ResidualCodec, codebook: np.ndarray, codes: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
    """Every pooled vector's residual code [n, bytes], chunk by chunk (rows: each shard's pooled vectors)."""
    encoded = np.empty((len(codes), codec.code_bytes), dtype=np.uint8)
    at = 0
    for shard_rows in rows:
        for a in range(0, len(shard_rows), _ENCODE_CHUNK):
            chunk = np.asarray(shard_rows[a : a + _ENCODE_CHUNK], dtype=np.float32)
            encoded[at : at + len(chunk)] = codec.encode(chunk - codebook[codes[at : at + len(chunk)]])
            at += len(chunk)
    return encoded


class InvertedLists:
    """The pooled vectors of the coded pages in list order (per centroid: its vectors' pages and residual codes),
    and the pages not coded yet (shards written after the codebook), which every shortlist includes."""

    def __init__(
        self,
        codebook: np.ndarray,
        page_codes: list[tuple[int, np.ndarray]],
        page_pooled: list[np.ndarray],
        num_pages: int,
        nbits: int = DEFAULT_NBITS,
        num_threads: int = 1,
        arrays: ListArrays | None = None,
    ):
        """page_codes: (first page, [pages, pool_size] uint16 codes) per coded shard; page_pooled: the same
        shards' pooled vectors [pages, pool_size, D] (any float dtype, e.g. memory-mapped fp16); `arrays`: the
        lists as built from these before (kept on disk), else they are built here."""
        codebook = np.asarray(codebook, dtype=np.float32)
        self.num_centroids = len(codebook)
        # The query-centroid scores: the fused kernel over the codebook in panels where it runs, else a torch GEMM
        # against the transposed codebook.
        kernels = available_kernels() if _kernel is not None else ()
        self._dense_kernel = kernels[0] if kernels else ""
        if self._dense_kernel:
            panels = torch.zeros((1, -(-len(codebook) // PANEL_LANES), codebook.shape[1], PANEL_LANES))
            write_panels(torch.from_numpy(codebook)[None], panels)
            self._codebook = panels.numpy()
        else:
            self._codebook = np.ascontiguousarray(codebook.T)  # [D, K]
        # The residual stage's kernel: one of residual_kernels() (the best by default).
        self.residual_kernel = (residual_kernels() or [""])[0]
        self.num_pages = num_pages
        self.num_threads = max(1, num_threads)
        coded = np.zeros(num_pages, dtype=bool)
        for first, codes in page_codes:
            if len(codes) and int(codes.max()) >= len(codebook):
                raise IndexFormatError(f"codes reach {int(codes.max())} but the codebook has {len(codebook)}")
            coded[first : first + len(codes)] = True
        self.coded_pages = np.flatnonzero(coded)
        self.uncoded = np.flatnonzero(~coded)
        if arrays is None:
            rows = [np.reshape(p, (-1, p.shape[-1])) for p in page_pooled]
            arrays = ListArrays.build(codebook, page_codes, rows, nbits)
        self.arrays = arrays
        self.codec, self.offsets, self.pages = arrays.codec, arrays.offsets, arrays.pages
        self.residuals = arrays.residuals

    @property
    def resident_bytes(self) -> int:
        arrays = (
            self._codebook,
            self.offsets,
            self.pages,
            self.residuals,
            self.coded_pages,
            self.uncoded,
        )
        return sum(a.nbytes for a in arrays)

    def probes(self, query: np.ndarray, probe: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """[Lq, D] query without zero rows -> (probed centroids [Lq, probe] int64, in no order; their scores
        [Lq, probe] float32; the imputed score of each query vector [Lq] float32: its lowest probed centroid's)."""
        probe = min(probe, self.num_centroids)
        query = np.asarray(query, dtype=np.float32)
        if self._dense_kernel:
            scores = torch.empty((len(query), self.num_centroids), dtype=torch.float32)
            _kernel.dense_scores(
                np.ascontiguousarray(query.T),
                len(query),
                query.shape[1],
                self._codebook,
                self.num_centroids,
                scores.numpy(),
                self._dense_kernel,
            )
        else:
            # torch, not numpy: in the pool's workers torch runs on the calling thread, while numpy's BLAS would
            # wake its own threads, which keep spinning on the cores the other workers need.
            scores = torch.from_numpy(query) @ torch.from_numpy(self._codebook)  # [Lq, K]
        best = torch.topk(scores, probe, dim=1, sorted=False)
        values = np.ascontiguousarray(best.values.numpy())
        return np.ascontiguousarray(best.indices.numpy()), values, np.ascontiguousarray(values.min(axis=1))

    def page_scores(self, query: np.ndarray, probe: int) -> np.ndarray:
        """[Lq, D] query (zero rows add nothing) -> float32 [num_pages]: each page's approximate MaxSim minus the
        all-imputed score (one constant for every page, so the order is the approximate MaxSim's); 0 for the pages
        no probed list holds, uncoded ones included."""
        query = np.ascontiguousarray(query[np.any(query != 0, axis=1)], dtype=np.float32)
        # One part per worker; a pool worker (a batch's query) keeps its query whole.
        parts = 1 if in_pool_worker() else max(1, min(self.num_threads, len(query)))
        deltas = np.zeros((parts, self.num_pages), dtype=np.float32)
        if not len(query):
            return deltas[0]
        bounds = np.linspace(0, len(query), parts + 1).astype(np.int64)

        def work(part: int) -> None:
            vectors = query[bounds[part] : bounds[part + 1]]
            centroids, centroid_scores, imputed = self.probes(vectors, probe)
            self._add_page_maxima(self.codec.nibble_tables(vectors), centroids, centroid_scores, imputed, deltas[part])

        if parts == 1:
            work(0)
        else:
            for future in [shared_pool(len(deltas)).submit(work, part) for part in range(len(deltas))]:
                future.result()
        return deltas.sum(axis=0)

    def _add_page_maxima(self, tables, centroids, centroid_scores, imputed, delta: np.ndarray) -> None:
        """For each query vector, adds (page maximum - imputed) to `delta` of the pages found in its probed lists."""
        if _kernel is not None:
            _kernel.probed_residual_scores(
                tables,
                centroids,
                centroid_scores,
                imputed,
                self.offsets,
                self.pages,
                self.residuals,
                delta,
                self.residual_kernel,
            )
            return
        positions = np.arange(self.codec.code_bytes)
        for table, chosen, base, missing in zip(tables, centroids, centroid_scores, imputed, strict=True):
            best = np.full(self.num_pages, -np.inf, dtype=np.float32)
            for centroid, centroid_score in zip(chosen, base, strict=True):
                a, b = self.offsets[centroid], self.offsets[centroid + 1]
                codes = self.residuals[a // BLOCK : b // BLOCK].transpose(0, 2, 1).reshape(-1, len(positions))
                scores = table[positions, 0, codes & 15].sum(axis=1) + table[positions, 1, codes >> 4].sum(axis=1)
                real = self.pages[a:b] >= 0
                np.maximum.at(best, self.pages[a:b][real], (centroid_score + scores[real]).astype(np.float32))
            found = np.isfinite(best)
            delta[found] += best[found] - missing

    def shortlist(self, query: np.ndarray, probe: int, count: int) -> np.ndarray:
        """The `count` coded pages with the best approximate scores, and every uncoded page; ascending."""
        scores = self.page_scores(query, probe)[self.coded_pages]
        pages = self.coded_pages
        if len(pages) > count:
            pages = np.sort(pages[torch.topk(torch.from_numpy(scores), count, sorted=False).indices.numpy()])
        return np.union1d(pages, self.uncoded).astype(np.int64)
