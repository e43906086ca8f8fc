"""Exact single-query MaxSim throughput of each fused kernel and the torch path against the fp32 matmul peak.

The peak (torch fp32 matmul, all threads) and each scorer are measured in alternation, `--rounds` times, and the
best of each is kept: on a shared machine, measurements far apart in time see different loads, alternating ones
see about the same. Prints one JSON document.

    python benchmarks/search_kernel_bench.py --pages 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_bench import measured_matmul_peak_gflops  # noqa: E402

from search_engine.maxsim import MaxSimScorer, available_kernels  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=10000)
    parser.add_argument("--tokens", type=int, default=780, help="vectors per page")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--query_tokens", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--residency", default="fp16", help="resident copy of the kernels (fp16 or fp32)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    shard = np.empty((args.pages * args.tokens, args.dim), dtype=np.float16)
    for start in range(0, len(shard), 1 << 18):
        block = rng.standard_normal((min(1 << 18, len(shard) - start), args.dim)).astype(np.float32)
        shard[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    counts = [np.full(args.pages, args.tokens, dtype=np.int64)]
    query = rng.standard_normal((1, args.query_tokens, args.dim)).astype(np.float32)
    flops = 2 * args.query_tokens * args.tokens * args.dim * args.pages
    report = {
        "cpu_count": os.cpu_count(),
        "kernels": list(available_kernels()),
        "pages": args.pages,
        "vectors_per_page": args.tokens,
        "query_vectors": args.query_tokens,
        "results": {},
    }
    peaks, loads = [], []
    for name in list(available_kernels()) + ["torch"]:
        if name == "torch":
            scorer = MaxSimScorer([shard], counts, residency="fp32", use_kernel=False)
        else:
            scorer = MaxSimScorer([shard], counts, residency=args.residency, kernel=name)
        scorer.scores(query)
        best = float("inf")
        for _ in range(args.rounds):
            peaks.append(measured_matmul_peak_gflops(repeats=2))
            started = time.perf_counter()
            scorer.scores(query)
            best = min(best, time.perf_counter() - started)
            loads.append(os.getloadavg()[0])
        report["results"][name] = {"best_ms": round(1e3 * best, 1), "gflops": round(flops / best / 1e9, 1)}
        del scorer
    peak = max(peaks)
    report["fp32_matmul_peak_gflops"] = round(peak, 1)
    for result in report["results"].values():
        result["fraction_of_peak"] = round(result["gflops"] / peak, 3)
    report["load_1min"] = [round(min(loads), 2), round(max(loads), 2)]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
