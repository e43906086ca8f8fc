"""fast-plaid as a peer of search_scale_bench.py, run in fast-plaid's own environment (it pins its own torch).

Reads an embedded index's shards (manifest.json and shard-*.vectors.npy, with numpy only: nothing of this project
is imported) and the queries, builds a fast-plaid index of the same page vectors on the CPU, times single-query
searches for each (n_ivf_probe, n_full_scores) setting, and prints one JSON document: build time, disk size, and
per setting the median latency, the load average, and the top 10 page numbers of every query (the caller computes
recall against its exact truth).

    FASTPLAID_PYTHON benchmarks/search_fast_plaid_peer.py --index_dir DIR --queries Q.npz --workdir W
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch


def page_vectors(index_dir: Path) -> list[torch.Tensor]:
    manifest = json.loads((index_dir / "manifest.json").read_text())
    pages = []
    for shard in manifest["shards"]:
        vectors = np.load(index_dir / f"{shard['name']}.vectors.npy", mmap_mode="r", allow_pickle=False)
        bounds = np.concatenate([[0], np.cumsum(shard["token_counts"])])
        pages += [
            torch.from_numpy(np.asarray(vectors[a:b], dtype=np.float32))
            for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
    return pages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index_dir", required=True)
    parser.add_argument("--queries", required=True, help=".npz with `vectors` (all queries) and `lengths`")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--settings", nargs="+", default=["8,1024", "16,4096"], help="n_ivf_probe,n_full_scores")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--kmeans_samples",
        type=int,
        default=None,
        help="documents k-means trains on (fast-plaid's n_samples_kmeans; default: its own, about "
        "16 sqrt(120 n), every page up to 17,500); the number of centroids does not depend on it",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from fast_plaid import search

    data = np.load(args.queries, allow_pickle=False)
    queries = np.split(data["vectors"], np.cumsum(data["lengths"])[:-1])
    path = Path(args.workdir) / "fast_plaid"
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    pages = page_vectors(Path(args.index_dir))
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    index = search.FastPlaid(index=str(path), device="cpu")
    index.create(documents_embeddings=pages, n_samples_kmeans=args.kmeans_samples)
    report = {
        "version": __import__("importlib.metadata").metadata.version("fast-plaid"),
        "torch": torch.__version__,
        "kmeans_samples": args.kmeans_samples,
        "read_vectors_s": round(read_s, 1),
        "build_s": round(time.perf_counter() - started, 1),
        "build_load_1min": round(os.getloadavg()[0], 2),
        "disk_bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
    }
    del pages
    report["settings"] = []
    for setting in args.settings:
        probe, full = (int(x) for x in setting.split(","))

        def run(query: np.ndarray, probe=probe, full=full) -> list[int]:
            hits = index.search(
                queries_embeddings=torch.from_numpy(query)[None],
                top_k=10,
                n_ivf_probe=probe,
                n_full_scores=full,
                show_progress=False,
            )
            return [int(page) for page, _ in hits[0]]

        run(queries[0])
        seconds, loads, rows = [], [], []
        for query in queries:
            begin = time.perf_counter()
            rows.append(run(query))
            seconds.append(time.perf_counter() - begin)
            loads.append(round(os.getloadavg()[0], 2))
        report["settings"].append(
            {
                "n_ivf_probe": probe,
                "n_full_scores": full,
                "median_ms": round(1e3 * float(np.median(seconds)), 1),
                "p90_ms": round(1e3 * float(np.percentile(seconds, 90)), 1),
                "load_1min": [min(loads), max(loads)],
                "top10": rows,
            }
        )
    shutil.rmtree(path, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
