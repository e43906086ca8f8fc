"""Search at scale on a corpus with real structure, side by side with peers, in one run (prints one JSON).

Corpus (benchmarks/search_corpus.py): real pages of Debian documentation PDFs embedded per token by
all-MiniLM-L6-v2 (projected to 128 dims), queries from the same text, scaled to N pages by near-copies.
For every N:
- build: shards with pooled centroids (64 per page), then the inverted lists (search_engine/ivf.py); times and
  disk sizes;
- exact MaxSim (the ground truth): single-query latency and GFLOP/s of each fused kernel this CPU runs (resident
  fp16 copy) and of the torch path, where the corpus fits in memory (`--resident_max_pages`); beyond, one batched
  pass over the memory-mapped shards gives the truth;
- approximate search as it runs at scale: the memory-mapped shards (`mmap` residency, read once beforehand so they
  sit in the page cache, unless `--no-warm_page_cache`), the pooled centroids and the lists resident; single-query
  latency (each setting's queries run twice: the first pass, which maps the pages it reads into the process, is
  reported apart), recall@10 against exact with its standard error, and the process's resident memory;
- peers on the same vectors and queries (up to `--peer_max_pages`): colpali-engine's `score_multi_vector` (one
  query per call), Qdrant's own engine in process (qdrant-edge-py) with exact multivector MaxSim, and with an HNSW
  prefetch on mean-pooled page vectors followed by MaxSim over the prefetched pages.

The load average (`os.getloadavg`) is recorded beside each timing: the machine may be shared.

    python benchmarks/search_scale_bench.py --pages 2000 10000 100000 --workdir /path/with/space
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import unidoc_rl.compat  # noqa: E402, F401  (before colpali-engine)

# isort: split
from bench_env import FAST_PLAID_PYTHON, missing_extra, require_modules  # noqa: E402
from search_bench import measured_matmul_peak_gflops, warm_page_cache  # noqa: E402
from search_corpus import (  # noqa: E402
    CORPUS_VERSION,
    DEFAULT_QUERIES,
    DIM,
    load_or_build_real_corpus,
    scaled_pages,
)

from search_engine.ivf import build_ivf, default_num_centroids, lists_file  # noqa: E402
from search_engine.manifest import Manifest, read_manifest, write_manifest  # noqa: E402
from search_engine.maxsim import MaxSimScorer, available_kernels, pad_queries, top_k  # noqa: E402
from search_engine.pooling import DEFAULT_POOL_SIZE, pool_pages, pool_tokens  # noqa: E402
from search_engine.residuals import DEFAULT_NBITS, residual_kernels  # noqa: E402
from search_engine.shards import load_vectors, write_vector_shard  # noqa: E402
from search_engine.vector_index import EmbeddedVectorIndex  # noqa: E402

K = 10


def load() -> float:
    return round(os.getloadavg()[0], 2)


def memory() -> dict:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return {"rss_bytes": fields.get("VmRSS"), "anon_bytes": fields.get("RssAnon"), "file_bytes": fields.get("RssFile")}


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return np.array([len(set(f[:K]) & set(t[:K])) / K for f, t in zip(found, truth, strict=True)])


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(per_query_recall(found, truth)))


def recall_stats(found: np.ndarray, truth: np.ndarray) -> dict:
    """recall@10 over the queries and its standard error (the spread of per-query recall over sqrt(queries))."""
    each = per_query_recall(found, truth)
    return {"recall_at_10": float(each.mean()), "recall_at_10_stderr": round(float(each.std() / np.sqrt(len(each))), 4)}


def _latency(seconds: list[float]) -> dict:
    return {
        "median_ms": round(1e3 * float(np.median(seconds)), 1),
        "p90_ms": round(1e3 * float(np.percentile(seconds, 90)), 1),
        "min_ms": round(1e3 * float(np.min(seconds)), 1),
    }


def _timed_pass(search, queries: list[np.ndarray]) -> tuple[list[np.ndarray], list[float], list[float]]:
    """Each query searched alone: its top rows, seconds and the 1-minute load after it."""
    rows, seconds, loads = [], [], []
    for query in queries:
        started = time.perf_counter()
        rows.append(np.asarray(search([query]))[0])
        seconds.append(time.perf_counter() - started)
        loads.append(load())
    return rows, seconds, loads


def timed_single(search, queries: list[np.ndarray], first_pass: bool = False) -> tuple[list[np.ndarray], dict]:
    """Each query searched alone and timed. `first_pass`: every query runs once timed before the reported pass
    (reported apart as `first_pass`: the pages it reads are touched for the first time in the process); else one
    query warms up."""
    if first_pass:
        first = _latency(_timed_pass(search, queries)[1])
    else:
        first = None
        search([queries[0]])
    rows, seconds, loads = _timed_pass(search, queries)
    stats = {**_latency(seconds), "load_1min": [min(loads), max(loads)]}
    if first is not None:
        stats["first_pass"] = first
    return rows, stats


def build_shards(index_dir: Path, real, num_pages: int, shard_pages: int, pool_size: int) -> dict:
    from tqdm import tqdm

    started = time.perf_counter()
    manifest = Manifest(backend="colqwen", model="minilm-l6-128", dim=DIM, settings={"pool_size": pool_size})
    for number, start in enumerate(tqdm(range(0, num_pages, shard_pages), desc=f"shards {num_pages}", unit="shard")):
        stop = min(start + shard_pages, num_pages)
        pages = scaled_pages(real, start, stop)
        pooled = pool_pages(np.concatenate(pages), [len(p) for p in pages], pool_size)
        manifest.shards.append(
            write_vector_shard(index_dir, f"shard-{number:06d}", [f"p{i}" for i in range(start, stop)], pages, pooled)
        )
    manifest.next_shard = len(manifest.shards)
    write_manifest(index_dir, manifest)
    return {"shards_and_pooling_s": round(time.perf_counter() - started, 1), "load_1min": load()}


def build_lists(index_dir: Path, centroids: int | None) -> dict:
    ivf = build_ivf(index_dir, num_centroids=centroids, progress=True)
    sizes = {kind: 0 for kind in ("vectors", "pooled", "ivf")}
    for path in index_dir.iterdir():
        kind = "ivf" if "ivf" in path.name else path.name.split(".")[-2] if path.name.count(".") >= 2 else None
        if kind in sizes:
            sizes[kind] += path.stat().st_size
    return {
        "ivf_build_s": ivf["build_s"],
        "ivf_centroids": ivf["centroids"],
        "disk_bytes": sizes,
        "ivf_load_1min": load(),
    }


def cached_or_built_index(args, index_dir: Path, real, num_pages: int) -> dict:
    """The build report of an index for these settings: from the cache (`--corpus-dir`) when it holds one, else
    built (into a clean directory); cached shards whose lists have another codebook size get new lists only."""
    key = {"pages": num_pages, "shard_pages": args.shard_pages, "pool_size": args.pool_size, "corpus": CORPUS_VERSION}
    report_path = index_dir.with_name(index_dir.name + ".build.json")
    cached = None
    if args.corpus_dir and report_path.exists() and (index_dir / "manifest.json").exists():
        cached = json.loads(report_path.read_text())
    if cached is None or cached.get("key") != key:
        shutil.rmtree(index_dir, ignore_errors=True)
        report_path.unlink(missing_ok=True)
        build = build_shards(index_dir, real, num_pages, args.shard_pages, args.pool_size)
    else:
        build = cached["build"]
        wanted = args.centroids or default_num_centroids(num_pages * args.pool_size)
        if build.get("ivf_centroids") == wanted:
            return {**build, "cached": True}
    build.update(build_lists(index_dir, args.centroids))
    report_path.write_text(json.dumps({"key": key, "build": build}))
    return build


def cached_truth(args, index_dir: Path, queries: list[np.ndarray], num_pages: int) -> tuple[np.ndarray, dict]:
    """Exact top 10 of the queries (the ground truth), from the cache when the queries are the same."""
    path = index_dir.with_name(index_dir.name + ".truth.npz")
    stacked = np.concatenate(queries)
    if args.corpus_dir and path.exists():
        data = np.load(path, allow_pickle=False)
        if data["queries"].shape == stacked.shape and np.array_equal(data["queries"], stacked):
            return data["truth"], {**json.loads(str(data["report"])), "cached": True}
    truth, report = exact_section(args, index_dir, queries, num_pages)
    if args.corpus_dir:
        np.savez(path, queries=stacked, truth=truth, report=json.dumps(report))
    return truth, report


def corpus_arrays(index_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    manifest = read_manifest(index_dir)
    shards = [load_vectors(index_dir, s, DIM) for s in manifest.shards]
    return shards, [np.asarray(s.token_counts, dtype=np.int64) for s in manifest.shards]


def pages_of_shard(vectors: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """A shard's [sum T, D] vectors -> its pages' [T, D] row blocks (views)."""
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [vectors[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def exact_section(args, index_dir: Path, queries: list[np.ndarray], num_pages: int) -> tuple[np.ndarray, dict]:
    shards, counts = corpus_arrays(index_dir)
    vectors = int(sum(c.sum() for c in counts))
    flops = 2 * float(np.mean([len(q) for q in queries])) * vectors * DIM
    report = {"vectors": vectors}
    truth = None
    if num_pages <= args.resident_max_pages:
        for kernel in list(available_kernels()) + ["torch"]:
            scorer = MaxSimScorer(
                shards,
                counts,
                residency="fp16" if kernel != "torch" else "fp32",
                use_kernel=kernel != "torch",
                kernel=None if kernel == "torch" else kernel,
            )
            chosen = queries if kernel != "torch" else queries[: args.torch_queries]
            rows, stats = timed_single(lambda q, s=scorer: top_k(s.scores(pad_queries(q)), K)[0], chosen)
            stats["gflops"] = round(flops / (stats["median_ms"] / 1e3) / 1e9, 1)
            stats["gflops_best"] = round(flops / (stats["min_ms"] / 1e3) / 1e9, 1)
            report[f"exact_single_{kernel}"] = stats
            if truth is None:
                truth = np.stack(rows)
            del scorer
    else:
        scorer = MaxSimScorer(shards, counts, residency="mmap", use_kernel=bool(available_kernels()))
        started = time.perf_counter()
        truth = top_k(scorer.scores(pad_queries(queries)), K)[0]
        report["exact_batched_mmap_s_for_all_queries"] = round(time.perf_counter() - started, 1)
        report["exact_batched_load_1min"] = load()
        del scorer
    return truth, report


def approx_section(args, index_dir: Path, queries, truth) -> dict:
    manifest = read_manifest(index_dir)
    report = {"memory_before_open": memory(), "by_residual_bits": {}}
    if args.warm_page_cache:
        report["page_cache_warmed"] = warm_page_cache(index_dir)
    for bits in args.residual_bits:
        kept = (index_dir / lists_file(bits)).exists()
        started = time.perf_counter()
        index = EmbeddedVectorIndex(index_dir, manifest, residency="mmap", residual_bits=bits)
        opened = {"open_s": round(time.perf_counter() - started, 2), "memory_after_open": memory()}
        opened["lists_kept_by_an_earlier_open"] = kept
        opened["index_resident_bytes"] = index.resident_bytes
        settings = []
        for probe, prefilter, candidates in args.settings:
            rows, stats = timed_single(
                lambda q, p=probe, f=prefilter, c=candidates, ix=index: ix.approx(q, K, c, p, f)[0],
                queries,
                first_pass=True,
            )
            settings.append(
                {
                    "probe": probe,
                    "prefilter": prefilter,
                    "candidates": candidates,
                    **recall_stats(np.stack(rows), truth),
                    **stats,
                }
            )
        opened["lists"] = settings
        if index.lists is not None:
            opened["residual_stage_by_kernel"] = residual_stage_by_kernel(index.lists, queries, args.settings[0][0])
        opened["memory_after_queries"] = memory()
        report["by_residual_bits"][str(bits)] = opened
        del index
    if len(truth) and manifest.num_pages <= args.resident_max_pages:
        scan = EmbeddedVectorIndex(index_dir, manifest, residency="mmap", use_lists=False)
        rows, stats = timed_single(lambda q: scan.approx(q, K, 512)[0], queries)
        report["pooled_scan_candidates_512"] = {"recall_at_10": recall(np.stack(rows), truth), **stats}
        del scan
    return report


def residual_stage_by_kernel(lists, queries: list[np.ndarray], probe: int) -> dict:
    """The residual stage alone (page scores from the lists at `probe`, single queries) with each residual kernel
    this CPU runs and the portable C loop: what a CPU without AVX-512 (or without AVX2) spends there."""
    chosen = lists.residual_kernel
    report = {"probe": probe}
    try:
        for kernel in residual_kernels():
            lists.residual_kernel = kernel
            _, report[kernel] = timed_single(lambda batch: lists.page_scores(batch[0], probe)[None], queries)
    finally:
        lists.residual_kernel = chosen
    return report


def token_pooling_section(args, index_dir: Path, real, truth: np.ndarray) -> dict:
    """Index-time token pooling (pooling.pool_tokens, colpali-engine's hierarchical pooler) against exact MaxSim on
    the unpooled vectors: per factor, exact MaxSim over the pooled pages (recall@10 against the unpooled truth, the
    query's own page in the top 10), single-query time (resident fp16, best kernel) and the vectors kept."""
    from tqdm import tqdm

    shards, counts = corpus_arrays(index_dir)
    report = {}
    for factor in args.token_pool_factors:
        started = time.perf_counter()
        pooled_shards, pooled_counts = [], []
        for vectors, shard_counts in tqdm(
            list(zip(shards, counts, strict=True)), desc=f"token pooling x{factor}", unit="shard"
        ):
            pages = pool_tokens([np.asarray(page) for page in pages_of_shard(vectors, shard_counts)], factor)
            pooled_shards.append(np.concatenate(pages))
            pooled_counts.append(np.array([len(p) for p in pages], dtype=np.int64))
        pooling_s = time.perf_counter() - started
        scorer = MaxSimScorer(pooled_shards, pooled_counts, residency="fp16", use_kernel=bool(available_kernels()))
        rows, stats = timed_single(lambda q, s=scorer: top_k(s.scores(pad_queries(q)), K)[0], real.queries)
        found = np.stack(rows)
        report[str(factor)] = {
            "vectors": int(sum(c.sum() for c in pooled_counts)),
            "pooling_s": round(pooling_s, 1),
            "recall_at_10_vs_unpooled_exact": recall(found, truth),
            "query_page_in_top10": float(np.mean([p in row for p, row in zip(real.query_pages, found, strict=True)])),
            "exact_single": stats,
        }
        del scorer
    return report


def colpali_section(index_dir: Path, queries, truth, count: int) -> dict:
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    shards, counts = corpus_arrays(index_dir)
    pages = []
    for shard, shard_counts in zip(shards, counts, strict=True):
        pages += [torch.from_numpy(np.asarray(page, dtype=np.float32)) for page in pages_of_shard(shard, shard_counts)]
    seconds, loads, rows = [], [], []
    for query in queries[:count]:
        started = time.perf_counter()
        scores = BaseVisualRetrieverProcessor.score_multi_vector([torch.from_numpy(query)], pages, 256, "cpu")
        seconds.append(time.perf_counter() - started)
        loads.append(load())
        rows.append(top_k(scores.numpy(), K)[0][0])
    return {
        "single_ms": round(1e3 * float(np.median(seconds)), 1),
        "queries_timed": count,
        "recall_at_10": recall(np.stack(rows), truth[:count]),
        "load_1min": [min(loads), max(loads)],
    }


def qdrant_section(workdir: Path, index_dir: Path, queries, truth, prefetch: int) -> dict:
    import qdrant_edge as q

    shards, counts = corpus_arrays(index_dir)
    path = workdir / "qdrant_edge"
    shutil.rmtree(path, ignore_errors=True)
    no_graph = q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10)
    config = q.EdgeConfig(
        vectors={
            "mv": q.EdgeVectorParams(
                DIM,
                q.Distance.Dot,
                multivector_config=q.MultiVectorConfig(q.MultiVectorComparator.MaxSim),
                datatype=q.VectorStorageDatatype.Float16,
                hnsw_config=no_graph,
            ),
            "mean": q.EdgeVectorParams(DIM, q.Distance.Dot),
        },
        hnsw_config=q.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10),
    )
    started = time.perf_counter()
    shard = q.EdgeShard.create(str(path), config)
    page = 0
    for vectors, shard_counts in zip(shards, counts, strict=True):
        pages = pages_of_shard(vectors, shard_counts)
        for begin in range(0, len(pages), 32):
            points = []
            for rows in pages[begin : begin + 32]:
                matrix = np.asarray(rows, dtype=np.float32)
                mean = matrix.mean(axis=0)
                points.append(q.Point(page, {"mv": matrix.tolist(), "mean": (mean / np.linalg.norm(mean)).tolist()}))
                page += 1
            shard.update(q.UpdateOperation.upsert_points(points))
    shard.optimize()
    build_s = time.perf_counter() - started

    def exact(batch):
        hits = shard.query(
            q.QueryRequest(
                limit=K, query=q.Query.Nearest(batch[0].tolist(), using="mv"), params=q.SearchParams(exact=True)
            )
        )
        return [[int(h.id) for h in hits]]

    def prefetched(batch):
        mean = batch[0].mean(axis=0)
        request = q.QueryRequest(
            limit=K,
            prefetches=[
                q.Prefetch(limit=prefetch, query=q.Query.Nearest((mean / np.linalg.norm(mean)).tolist(), using="mean"))
            ],
            query=q.Query.Nearest(batch[0].tolist(), using="mv"),
        )
        return [[int(h.id) for h in shard.query(request)]]

    report = {"build_s": round(build_s, 1), "build_load_1min": load()}
    rows, stats = timed_single(exact, queries)
    report["exact_maxsim"] = {"recall_at_10": recall(np.stack(rows), truth), **stats}
    rows, stats = timed_single(prefetched, queries)
    report[f"mean_hnsw_prefetch_{prefetch}_then_maxsim"] = {"recall_at_10": recall(np.stack(rows), truth), **stats}
    shard.close()
    report["disk_bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    shutil.rmtree(path, ignore_errors=True)
    return report


def fast_plaid_section(args, workdir: Path, index_dir: Path, queries, truth) -> dict:
    """fast-plaid (its own environment, `--fast-plaid-python`) on the same shards and queries, as a subprocess."""
    import subprocess

    query_file = workdir / "fast_plaid_queries.npz"
    np.savez(query_file, vectors=np.concatenate(queries), lengths=np.array([len(x) for x in queries]))
    command = [
        args.fast_plaid_python,
        str(Path(__file__).resolve().parent / "search_fast_plaid_peer.py"),
        "--index_dir",
        str(index_dir),
        "--queries",
        str(query_file),
        "--workdir",
        str(workdir),
    ]
    if args.fast_plaid_kmeans_samples:
        command += ["--kmeans_samples", str(args.fast_plaid_kmeans_samples)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-5:]}
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for setting in report["settings"]:
        setting["recall_at_10"] = recall(np.array(setting.pop("top10")), truth)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--pages", type=int, nargs="+", default=[2000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES, help="queries drawn from the real pages")
    parser.add_argument("--workdir", default="/tmp/search_scale_bench", help="index data (removed unless --keep)")
    parser.add_argument("--keep", action="store_true", help="keep the indexes and the embedded corpus cache")
    parser.add_argument(
        "--corpus-dir",
        "--corpus_dir",
        dest="corpus_dir",
        default=None,
        help="cache: the embedded real corpus, each N's index (with its build report) and exact top 10 live here, "
        "are reused by later runs with the same settings, and are never removed",
    )
    parser.add_argument("--build_only", action="store_true", help="build (or find) the indexes, measure nothing")
    parser.add_argument(
        "--fast-plaid-python",
        "--fast_plaid_python",
        dest="fast_plaid_python",
        default=str(FAST_PLAID_PYTHON) if FAST_PLAID_PYTHON.exists() else None,
        help="python of an environment with fast-plaid installed: runs it as a peer in a subprocess (default: the "
        "environment `make bench-env` creates, when it exists; fast-plaid is skipped without one)",
    )
    parser.add_argument(
        "--fast_plaid_max_pages",
        type=int,
        default=2000,
        help="largest N fast-plaid runs on (its build is slow on CPUs)",
    )
    parser.add_argument(
        "--fast_plaid_kmeans_samples",
        type=int,
        default=None,
        help="pages fast-plaid's k-means trains on (its n_samples_kmeans; default: fast-plaid's own, every page "
        "up to about 17,500: its CPU build at 10,000 pages did not finish in 40 minutes)",
    )
    parser.add_argument("--shard_pages", type=int, default=1000)
    parser.add_argument("--pool_size", type=int, default=DEFAULT_POOL_SIZE)
    parser.add_argument("--centroids", type=int, default=None, help="codebook size (default: ivf.py's for N)")
    parser.add_argument("--resident_max_pages", type=int, default=10000, help="largest N timed with resident copies")
    parser.add_argument("--peer_max_pages", type=int, default=10000, help="largest N the peers run on")
    parser.add_argument("--qdrant_max_pages", type=int, default=2000, help="largest N qdrant-edge runs on")
    parser.add_argument("--colpali_queries", type=int, default=4)
    parser.add_argument(
        "--token_pool_factors", type=int, nargs="*", default=[2, 3], help="index-time token pooling factors measured"
    )
    parser.add_argument("--token_pool_max_pages", type=int, default=10000, help="largest N token pooling runs on")
    parser.add_argument("--torch_queries", type=int, default=4, help="single queries timed on the torch path")
    parser.add_argument(
        "--warm_page_cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read the page vectors once before timing approximate search (a serving process's steady state; "
        "--no-warm_page_cache times first reads from disk too)",
    )
    parser.add_argument(
        "--settings",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        nargs="+",
        default=[(64, 1024, 256), (32, 512, 128), (16, 512, 128), (32, 256, 256), (64, 2048, 256), (64, 1024, 512)],
        help="approx settings probe,prefilter,candidates (prefilter <= candidates skips the pooled stage)",
    )
    parser.add_argument(
        "--residual_bits",
        type=int,
        nargs="+",
        default=[DEFAULT_NBITS],
        help="bits per dimension of the lists' residuals; each value opens the index once",
    )
    args = parser.parse_args(argv)
    if not args.build_only:
        if min(args.pages) <= args.peer_max_pages:
            require_modules("the colpali-engine peer", "colpali_engine")
        if min(args.pages) <= args.qdrant_max_pages:
            require_modules("the qdrant-edge peer", "qdrant_edge")
    if args.fast_plaid_python and not Path(args.fast_plaid_python).exists():
        raise missing_extra(f"the fast-plaid peer's interpreter {args.fast_plaid_python} does not exist")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cpu_count": os.cpu_count(), "kernels": list(available_kernels()), "cpu": _cpu_name()},
        "fp32_matmul_peak_gflops": [round(measured_matmul_peak_gflops(), 1)],
        "peak_load_1min": [load()],
    }
    started = time.perf_counter()
    real = load_or_build_real_corpus(Path(args.corpus_dir or workdir) / "real_corpus.npz", args.queries)
    report["real_corpus"] = {
        "pages": len(real.pages),
        "vectors": int(sum(len(p) for p in real.pages)),
        "queries": len(real.queries),
        "query_vectors_mean": round(float(np.mean([len(x) for x in real.queries])), 1),
        "example_queries": real.query_texts[:3],
        "seconds": round(time.perf_counter() - started, 1),
    }
    report["results"] = []
    try:
        for num_pages in args.pages:
            index_dir = Path(args.corpus_dir or workdir) / f"index_{num_pages}"
            result = {"pages": num_pages, "build": cached_or_built_index(args, index_dir, real, num_pages)}
            if args.build_only:
                report["results"].append(result)
                continue
            truth, result["exact"] = cached_truth(args, index_dir, real.queries, num_pages)
            result["query_page_in_exact_top10"] = float(
                np.mean([p in row for p, row in zip(real.query_pages, truth, strict=True)])
            )
            result["approx_mmap"] = approx_section(args, index_dir, real.queries, truth)
            if num_pages <= args.token_pool_max_pages and args.token_pool_factors:
                result["token_pooling"] = token_pooling_section(args, index_dir, real, truth)
            if num_pages <= args.peer_max_pages:
                result["colpali_engine"] = colpali_section(index_dir, real.queries, truth, args.colpali_queries)
            if num_pages <= args.qdrant_max_pages:
                result["qdrant_edge"] = qdrant_section(workdir, index_dir, real.queries, truth, 512)
            if args.fast_plaid_python and num_pages <= args.fast_plaid_max_pages:
                result["fast_plaid"] = fast_plaid_section(args, workdir, index_dir, real.queries, truth)
            report["results"].append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
            if not args.keep and not args.corpus_dir:
                shutil.rmtree(index_dir, ignore_errors=True)
        report["fp32_matmul_peak_gflops"].append(round(measured_matmul_peak_gflops(), 1))
        report["peak_load_1min"].append(load())
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=1))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
