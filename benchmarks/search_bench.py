"""Benchmark the embedded multi-vector index against colpali-engine's `score_multi_vector` (prints JSON).

Synthetic ColQwen-shaped data: N pages x T vectors x D dims (fp16, L2-normalized), queries of Lq vectors. Pages are
built like real page embeddings: about half of the vectors are near a few shared "background" directions (blank
space), the rest near the concepts of the page's document topic plus a few page-specific ones; a query is a few
shared prefix vectors plus noisy copies of concepts of one target page. Exact MaxSim ranks the target page and
its topic neighbours on top, so recall@10 of the approximate mode is measured against a non-trivial ranking.

    python benchmarks/search_bench.py                       # N = 1,000 and 10,000
    python benchmarks/search_bench.py --pages 1000 --colpali_queries 2

colpali-engine is called one query per call with batch_size=256, as the reference service does, on fp32 copies of
the stored fp16 vectors (the same values, so the scores must agree). The JSON store is one JSON float list per page
(the reference layout); it is measured on --json_store_pages pages and extrapolated linearly, as reported.

The index is opened with the default residency (a resident copy built at open; its open time includes building
it) and kernel (the fused AVX-512 kernel where it is built and the CPU runs it), and, for comparison, with "mmap"
residency (the memory-mapped shards only) and with the torch path on an fp32 copy. Fractions of the fp32 matmul
peak use the larger of the peaks measured before and after the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import unidoc_rl.compat  # noqa: E402, F401  (before colpali-engine)

# isort: split
from search_engine.manifest import Manifest, read_manifest, write_manifest  # noqa: E402
from search_engine.maxsim import kernel_available  # noqa: E402
from search_engine.pooling import DEFAULT_POOL_SIZE, pool_pages  # noqa: E402
from search_engine.shards import write_vector_shard  # noqa: E402
from search_engine.vector_index import DEFAULT_CANDIDATES, EmbeddedVectorIndex  # noqa: E402

PAGES_PER_TOPIC = 10
CONCEPTS_PER_TOPIC = 64


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


class SyntheticCorpus:
    def __init__(self, num_pages: int, tokens: int, dim: int, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.num_pages, self.tokens, self.dim = num_pages, tokens, dim
        self.background = _unit(self.rng.standard_normal((16, dim)))
        num_topics = max(1, num_pages // PAGES_PER_TOPIC)
        self.topics = _unit(self.rng.standard_normal((num_topics, CONCEPTS_PER_TOPIC, dim))).astype(np.float32)
        self.query_prefix = _unit(self.rng.standard_normal(dim))
        self.page_concepts = np.empty((num_pages, 32, dim), dtype=np.float32)

    def pages(self, start: int, stop: int) -> list[np.ndarray]:
        rng, count, tokens, dim = self.rng, stop - start, self.tokens, self.dim
        topic = np.arange(start, stop) // PAGES_PER_TOPIC
        picks = np.argsort(rng.random((count, CONCEPTS_PER_TOPIC)), axis=1)[:, :24]
        concepts = np.concatenate(
            [self.topics[topic[:, None], picks], _unit(rng.standard_normal((count, 8, dim))).astype(np.float32)], axis=1
        )
        self.page_concepts[start:stop] = concepts
        half = tokens // 2
        background = self.background[rng.integers(0, 16, (count, half))] + 0.1 * rng.standard_normal((count, half, dim))
        content = concepts[np.arange(count)[:, None], rng.integers(0, 32, (count, tokens - half))]
        content = content + rng.standard_normal((count, tokens - half, dim)) * (0.5 / np.sqrt(dim))
        vectors = _unit(np.concatenate([background, content], axis=1)).astype(np.float16)
        return list(vectors)

    def query(self, page: int, length: int) -> np.ndarray:
        rng, dim = self.rng, self.dim
        prefix = self.query_prefix + 0.1 * rng.standard_normal((5, dim)) / np.sqrt(dim)
        body = self.page_concepts[page][rng.integers(0, 32, length - 5)]
        body = body + 0.7 * rng.standard_normal((length - 5, dim)) / np.sqrt(dim)
        return _unit(np.concatenate([prefix, body])).astype(np.float32)


def build_index(index_dir: Path, corpus: SyntheticCorpus, shard_pages: int, pool_size: int) -> float:
    started = time.perf_counter()
    manifest = Manifest(backend="colqwen", model="synthetic", dim=corpus.dim, settings={"pool_size": pool_size})
    for number, start in enumerate(range(0, corpus.num_pages, shard_pages)):
        stop = min(start + shard_pages, corpus.num_pages)
        pages = corpus.pages(start, stop)
        pooled = pool_pages(np.concatenate(pages), [p.shape[0] for p in pages], pool_size)
        ids = [f"doc{i // PAGES_PER_TOPIC}_{i % PAGES_PER_TOPIC + 1}" for i in range(start, stop)]
        manifest.shards.append(write_vector_shard(index_dir, f"shard-{number:06d}", ids, pages, pooled))
    manifest.next_shard = len(manifest.shards)
    write_manifest(index_dir, manifest)
    return time.perf_counter() - started


def measured_matmul_peak_gflops(repeats: int = 5) -> float:
    best = 0.0
    for size in (1024, 2048, 4096):
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        for _ in range(repeats):
            started = time.perf_counter()
            a @ b
            best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best


def warm_page_cache(index_dir: Path) -> dict:
    """Reads the index's page-vector shards once, so timings see them in the page cache, as a search service does
    once it has served a while (the approximate mode reads them memory-mapped). Reports whether they fit beside
    what the system had available."""
    files = sorted(index_dir.glob("*.vectors.npy"))
    size = sum(path.stat().st_size for path in files)
    available = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemAvailable:")
    )
    started = time.perf_counter()
    buffer = bytearray(1 << 24)
    for path in files:
        with path.open("rb") as handle:
            while handle.readinto(buffer):
                pass
    return {
        "vectors_bytes": size,
        "mem_available_bytes_before": available,
        "fits": size < available,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


def json_store(index_dir: Path, json_dir: Path, num_pages: int, dim: int) -> dict:
    """Write `num_pages` pages as one JSON float list each (the reference layout), then time opening them."""
    manifest = read_manifest(index_dir)
    shard = manifest.shards[0]
    vectors = np.load(index_dir / f"{shard.name}.vectors.npy", mmap_mode="r")
    starts = np.concatenate([[0], np.cumsum(shard.token_counts)])
    json_dir.mkdir(parents=True, exist_ok=True)
    num_pages = min(num_pages, len(shard.page_ids))
    for page in range(num_pages):
        flat = np.asarray(vectors[starts[page] : starts[page + 1]], dtype=np.float32).reshape(-1).tolist()
        (json_dir / f"{shard.page_ids[page]}.json").write_text(json.dumps({"embedding": flat}))
    size = sum(p.stat().st_size for p in json_dir.iterdir())
    started = time.perf_counter()
    loaded = [
        torch.tensor(json.loads(path.read_text())["embedding"]).view(-1, dim).bfloat16()
        for path in sorted(json_dir.iterdir())
    ]
    seconds = time.perf_counter() - started
    assert len(loaded) == num_pages
    return {"pages_measured": num_pages, "open_s": seconds, "disk_bytes": size}


def bench(args, num_pages: int, workdir: Path) -> dict:
    corpus = SyntheticCorpus(num_pages, args.tokens, args.dim, seed=num_pages)
    index_dir = workdir / f"index_{num_pages}"
    build_s = build_index(index_dir, corpus, args.shard_pages, args.pool_size)
    manifest = read_manifest(index_dir)
    disk = sum(p.stat().st_size for p in index_dir.iterdir())
    index, open_s = _timed(EmbeddedVectorIndex, index_dir, manifest)
    targets = corpus.rng.integers(0, num_pages, args.queries)
    queries = [corpus.query(int(p), args.query_tokens) for p in targets]
    k = 10

    low_memory, low_memory_open_s = _timed(lambda: EmbeddedVectorIndex(index_dir, manifest, residency="mmap"))
    low_memory.exact(queries[:1], k)
    low_memory_single = [_timed(low_memory.exact, [q], k)[1] for q in queries[: args.other_queries]]
    del low_memory
    torch_path = EmbeddedVectorIndex(index_dir, manifest, residency="fp32", use_kernel=False)
    torch_path.exact(queries[:1], k)
    torch_path_single = [_timed(torch_path.exact, [q], k)[1] for q in queries[: args.other_queries]]
    del torch_path

    index.exact(queries[:1], k)
    exact_single = []
    exact_rows = []
    for q in queries:
        (idx, _), seconds = _timed(index.exact, [q], k)
        exact_single.append(seconds)
        exact_rows.append(idx[0])
    (exact_idx, exact_scores), exact_batch_s = _timed(index.exact, queries, k)
    approx_settings = []
    for candidates in args.candidates:
        approx_single = []
        approx_rows = []
        for q in queries:
            (idx, _), seconds = _timed(index.approx, [q], k, candidates)
            approx_single.append(seconds)
            approx_rows.append(idx[0])
        (approx_idx, _), approx_batch_s = _timed(index.approx, queries, k, candidates)
        approx_settings.append(
            {
                "candidates": candidates,
                "single_ms": 1e3 * float(np.median(approx_single)),
                "batched_ms": 1e3 * approx_batch_s / len(queries),
                "recall": float(
                    np.mean([len(set(a) & set(e)) / k for a, e in zip(approx_rows, exact_rows, strict=True)])
                ),
                "recall_batched": float(
                    np.mean([len(set(a) & set(e)) / k for a, e in zip(approx_idx, exact_idx, strict=True)])
                ),
            }
        )
    target_top1 = float(np.mean([row[0] == t for row, t in zip(exact_idx, targets, strict=True)]))

    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    starts = np.concatenate([[0], np.cumsum([c for s in manifest.shards for c in s.token_counts])])
    shards = [np.load(index_dir / f"{s.name}.vectors.npy", mmap_mode="r") for s in manifest.shards]
    page_tensors = []
    for shard_entry, shard in zip(manifest.shards, shards, strict=True):
        offsets = np.concatenate([[0], np.cumsum(shard_entry.token_counts)])
        page_tensors += [
            torch.from_numpy(np.asarray(shard[a:b], dtype=np.float32))
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        ]
    del starts
    colpali_s = []
    max_diff = 0.0
    full_scores = index._scorer.scores(np.stack(queries[: args.colpali_queries]))
    for row, q in enumerate(queries[: args.colpali_queries]):
        scores, seconds = _timed(
            BaseVisualRetrieverProcessor.score_multi_vector, [torch.from_numpy(q)], page_tensors, 256, "cpu"
        )
        colpali_s.append(seconds)
        max_diff = max(max_diff, float(np.abs(scores.numpy()[0] - full_scores[row]).max()))
    del page_tensors

    flops = 2 * args.query_tokens * args.tokens * args.dim * num_pages
    exact_single_ms = 1e3 * float(np.median(exact_single))
    exact_batch_ms = 1e3 * exact_batch_s / len(queries)
    colpali_ms = 1e3 * float(np.median(colpali_s))
    json_result = json_store(index_dir, workdir / f"json_{num_pages}", args.json_store_pages, args.dim)
    json_open_per_page = json_result["open_s"] / json_result["pages_measured"]
    json_bytes_per_page = json_result["disk_bytes"] / json_result["pages_measured"]
    shutil.rmtree(workdir / f"json_{num_pages}")
    return {
        "pages": num_pages,
        "vectors_per_page": args.tokens,
        "query_vectors": args.query_tokens,
        "build_s": round(build_s, 1),
        "queries": len(queries),
        "exact_single_ms_per_query": round(exact_single_ms, 1),
        "exact_batched_ms_per_query": round(exact_batch_ms, 1),
        "colpali_engine_ms_per_query": round(colpali_ms, 1),
        "colpali_queries_timed": len(colpali_s),
        "max_abs_score_diff_vs_colpali": float(f"{max_diff:.3g}"),
        "speedup_exact_single_vs_colpali": round(colpali_ms / exact_single_ms, 2),
        "speedup_exact_batched_vs_colpali": round(colpali_ms / exact_batch_ms, 2),
        "approx": [
            {
                "candidates": a["candidates"],
                "single_ms_per_query": round(a["single_ms"], 1),
                "batched_ms_per_query": round(a["batched_ms"], 1),
                "speedup_single_vs_colpali": round(colpali_ms / a["single_ms"], 2),
                "speedup_batched_vs_colpali": round(colpali_ms / a["batched_ms"], 2),
                "recall_at_10": a["recall"],
                "recall_at_10_batched": a["recall_batched"],
            }
            for a in approx_settings
        ],
        "exact_top1_is_target_page": target_top1,
        "exact_gflops_single": round(flops / (exact_single_ms / 1e3) / 1e9, 1),
        "exact_gflops_batched": round(flops / (exact_batch_ms / 1e3) / 1e9, 1),
        "mmap_residency_exact_single_ms_per_query": round(1e3 * float(np.median(low_memory_single)), 1),
        "mmap_residency_index_open_s": round(low_memory_open_s, 4),
        "torch_path_fp32_exact_single_ms_per_query": round(1e3 * float(np.median(torch_path_single)), 1),
        "index_open_s": round(open_s, 4),
        "index_resident_bytes": index.resident_bytes,
        "index_disk_bytes": disk,
        "json_store_measured_pages": json_result["pages_measured"],
        "json_store_open_s_measured": round(json_result["open_s"], 2),
        "json_store_open_s_extrapolated": round(json_open_per_page * num_pages, 1),
        "json_store_disk_bytes_extrapolated": int(json_bytes_per_page * num_pages),
        "open_speedup_vs_json_store": round(json_open_per_page * num_pages / open_s, 1),
        "disk_ratio_json_over_ours": round(json_bytes_per_page * num_pages / disk, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--pages", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--tokens", type=int, default=780, help="vectors per page")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--query_tokens", type=int, default=25)
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--colpali_queries", type=int, default=2, help="single-query colpali-engine calls timed")
    parser.add_argument(
        "--candidates", type=int, nargs="+", default=[128, 256, DEFAULT_CANDIDATES], help="approx shortlists to try"
    )
    parser.add_argument(
        "--other_queries", type=int, default=4, help="single queries timed with mmap residency and the torch path"
    )
    parser.add_argument("--pool_size", type=int, default=DEFAULT_POOL_SIZE)
    parser.add_argument("--shard_pages", type=int, default=1000)
    parser.add_argument("--json_store_pages", type=int, default=200, help="pages written to the JSON store")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="search_bench_"))
    peak = measured_matmul_peak_gflops()
    report = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "fused_kernel": kernel_available(),
        },
        "fp32_matmul_peak_gflops": round(peak, 1),
        "results": [],
    }
    try:
        for num_pages in args.pages:
            report["results"].append(bench(args, num_pages, workdir))
            print(json.dumps(report["results"][-1]), file=sys.stderr, flush=True)
        # The peak is re-measured at the end (another process may have competed for the cores at the start).
        report["fp32_matmul_peak_gflops_end"] = round(measured_matmul_peak_gflops(), 1)
        peak = max(peak, report["fp32_matmul_peak_gflops_end"])
        for result in report["results"]:
            for kind in ("single", "batched"):
                result[f"exact_fraction_of_peak_{kind}"] = round(result[f"exact_gflops_{kind}"] / peak, 3)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
