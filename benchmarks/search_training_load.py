"""What a GRPO step asks of the search service, replayed over HTTP on loopback, batched vs unbatched (prints JSON).

    python benchmarks/search_training_load.py --pages 10000 --steps 5 --workdir /tmp/training_load --keep

A step: `--episodes` (80: 16 prompts x 5 rollouts) episodes start together, each sends 1-3 searches (one query per
request, `--top_k`), one after the other, as an agent does turn after turn (no generation time between them: the
service's worst case). The service runs in a subprocess on a synthetic ColQwen-shaped corpus (search_bench.py's
topic corpus; `--tokens` vectors of 128 dims per page, pooled centroids and inverted lists) in `--mode` and
`--residency`, with an encoder stand-in that returns stored query vectors (query encoding is the GPU's job on a
training node); the same steps run against the batched service (`--max_batch_queries`, `--batch_wait_ms`) and the
unbatched one (`--max_batch_queries 0`: each request searched on its own in a worker thread). Reported per
service: queries/s, latency p50/p99/max, and the batch-size distribution (from /health); then the ratio. With
`--encoder_batches`, the real query encoder's cost per batch (the tiny ColQwen of unidoc_rl.standins.tiny_models on
this CPU) is measured apart.

With `--scale_corpus DIR`, the service instead serves search_scale_bench.py's index of `--pages` pages cached in
DIR (its `--corpus-dir`: real Debian-documentation pages scaled by near-copies; its page vectors are read once
before the services start, so they sit in the page cache as they do once a service has run a while), and the
episodes draw from that corpus's queries:

    python benchmarks/search_scale_bench.py --pages 100000 --corpus-dir /data/scale --build_only
    python benchmarks/search_training_load.py --scale_corpus /data/scale --pages 100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from search_bench import SyntheticCorpus, build_index  # noqa: E402

from search_engine.ivf import build_ivf  # noqa: E402
from unidoc_rl.standins.serving import free_port, wait_until_healthy  # noqa: E402

DIM = 128
QUERY_VECTORS = 25


class StoredQueryEncoder:
    """The encoder stand-in of the served process: query text "q{i}" -> the i-th stored query matrix."""

    fingerprint = None

    def __init__(self, model_name: str, vectors: list[np.ndarray]):
        self.model_name = model_name
        self.vectors = vectors

    def embed_queries(self, queries: list[str]) -> list[np.ndarray]:
        return [self.vectors[int(query[1:])] for query in queries]


def serve(args) -> None:
    """The service process (`--serve`): the index of `--workdir` with the stored queries as its encoder."""
    from search_engine.manifest import read_manifest
    from search_engine.search_engine_api import ServiceConfig, create_app
    from search_engine.searcher import Searcher, SearchSettings
    from unidoc_rl.common.http_server import run_server

    workdir = Path(args.workdir)
    data = np.load(workdir / "queries.npz", allow_pickle=False)
    vectors = np.split(data["vectors"], np.cumsum(data["lengths"])[:-1])
    index_dir = index_dir_of(args)
    encoder = StoredQueryEncoder(read_manifest(index_dir).model, vectors)
    settings = SearchSettings(mode=args.mode, residency=args.residency)
    searcher = Searcher(index_dir, settings=settings, encoder=encoder)
    config = ServiceConfig(
        dataset_dir=str(workdir),
        port=args.port,
        max_batch_queries=args.max_batch_queries,
        batch_wait_ms=args.batch_wait_ms,
        log_level="warning",
    )
    run_server(create_app(config, searcher), config.host, config.port, "warning")


def index_dir_of(args) -> Path:
    if args.scale_corpus:
        return Path(args.scale_corpus) / f"index_{args.pages}"
    return Path(args.workdir) / "index"


def prepare_scale_corpus(args, workdir: Path) -> dict:
    """search_scale_bench.py's cached index of `--pages` pages, and its corpus's queries stored in `workdir`."""
    from search_bench import warm_page_cache
    from search_corpus import load_or_build_real_corpus

    index_dir = index_dir_of(args)
    build_report = index_dir.with_name(index_dir.name + ".build.json")
    if not build_report.exists():
        raise SystemExit(
            f"{index_dir} is not built: python benchmarks/search_scale_bench.py --pages {args.pages} "
            f"--corpus-dir {args.scale_corpus} --build_only"
        )
    real = load_or_build_real_corpus(Path(args.scale_corpus) / "real_corpus.npz", None)
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(workdir / "queries.npz", vectors=np.concatenate(real.queries), lengths=[len(q) for q in real.queries])
    args.queries = len(real.queries)
    return {
        **json.loads(build_report.read_text())["build"],
        "corpus": "search_scale_bench.py (real pages, scaled)",
        "page_cache_warmed": warm_page_cache(index_dir),
    }


def prepare(args, workdir: Path) -> dict:
    """The index and the stored queries in `workdir` (reused when they are there for the same settings)."""
    if args.scale_corpus:
        return prepare_scale_corpus(args, workdir)
    key = {"pages": args.pages, "tokens": args.tokens, "queries": args.queries, "seed": 0}
    report_path = workdir / "build.json"
    if report_path.exists() and json.loads(report_path.read_text())["key"] == key:
        return {**json.loads(report_path.read_text())["build"], "cached": True}
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    corpus = SyntheticCorpus(args.pages, args.tokens, DIM)
    shards_s = build_index(workdir / "index", corpus, 1000, 64)
    ivf = build_ivf(workdir / "index")
    rng = np.random.default_rng(1)
    queries = [corpus.query(int(page), QUERY_VECTORS) for page in rng.integers(0, args.pages, args.queries)]
    np.savez(workdir / "queries.npz", vectors=np.concatenate(queries), lengths=[len(q) for q in queries])
    build = {"shards_and_pooling_s": round(shards_s, 1), "ivf_build_s": ivf["build_s"], "centroids": ivf["centroids"]}
    report_path.write_text(json.dumps({"key": key, "build": build}))
    return build


def start_service(args, max_batch_queries: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, __file__, "--serve", "--workdir", args.workdir, "--port", str(port), "--mode", args.mode,
        "--residency", args.residency, "--max_batch_queries", str(max_batch_queries),
        "--batch_wait_ms", str(args.batch_wait_ms), "--pages", str(args.pages),
    ]  # fmt: skip
    if args.scale_corpus:
        command += ["--scale_corpus", args.scale_corpus]
    service = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(service, url, timeout_s=600)
    return service, url


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def grpo_steps(url: str, service_pid: int, args) -> dict:
    """`--steps` steps of `--episodes` concurrent episodes, each 1-3 searches in sequence. Besides the rates, the
    CPU time per query of the service and of this load generator: both share the machine's cores here, while on
    a training node the episodes run elsewhere."""
    rng = np.random.default_rng(2)
    latencies: list[float] = []
    errors: list[str] = []

    async def episode(client: httpx.AsyncClient, searches: int) -> None:
        for _ in range(searches):
            body = {"queries": [f"q{int(rng.integers(0, args.queries))}"], "top_k": args.top_k}
            started = time.perf_counter()
            response = await client.post("/search", json=body)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200 or len(response.json()["results"][0]) != args.top_k:
                errors.append(f"HTTP {response.status_code}")

    limits = httpx.Limits(max_connections=args.episodes, max_keepalive_connections=args.episodes)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await episode(client, 2)  # warm-up
        latencies.clear()
        before = (await client.get("/health")).json()["batching"]
        cpu_before = process_cpu_seconds(service_pid), process_cpu_seconds(os.getpid())
        started = time.perf_counter()
        step_seconds = []
        for _ in range(args.steps):
            step_started = time.perf_counter()
            await asyncio.gather(*(episode(client, int(rng.integers(1, 4))) for _ in range(args.episodes)))
            step_seconds.append(time.perf_counter() - step_started)
        elapsed = time.perf_counter() - started
        cpu_after = process_cpu_seconds(service_pid), process_cpu_seconds(os.getpid())
        after = (await client.get("/health")).json()["batching"]
    lat_ms = np.array(latencies) * 1e3
    report = {
        "queries": len(latencies),
        "errors": len(errors),
        "seconds": round(elapsed, 2),
        "queries_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 1),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 1),
        "max_ms": round(float(lat_ms.max()), 1),
        "step_seconds": [round(s, 2) for s in step_seconds],
        "load_1min": round(os.getloadavg()[0], 2),
        "service_cpu_ms_per_query": round(1e3 * (cpu_after[0] - cpu_before[0]) / len(latencies), 1),
        "load_generator_cpu_ms_per_query": round(1e3 * (cpu_after[1] - cpu_before[1]) / len(latencies), 1),
    }
    if after is not None:
        sizes = {
            size: count - before["queries_per_batch"].get(size, 0) for size, count in after["queries_per_batch"].items()
        }
        sizes = {int(size): count for size, count in sizes.items() if count}
        report["batches"] = sum(sizes.values())
        report["queries_per_batch"] = dict(sorted(sizes.items()))
        report["mean_queries_per_batch"] = round(sum(s * c for s, c in sizes.items()) / max(1, report["batches"]), 1)
    return report


def encoder_batches(sizes: list[int]) -> dict:
    """The real query encoder (the tiny ColQwen, CPU): ms per call for each batch size (median of 3)."""
    from search_engine.colqwen import ColQwenEncoder
    from unidoc_rl.standins.tiny_models import tiny_retriever_path

    encoder = ColQwenEncoder(tiny_retriever_path(), device="cpu", batch_size=max(sizes))
    texts = [f"what is the dividend per share proposed for year {year}?" for year in range(max(sizes))]
    encoder.embed_queries(texts[:2])
    report = {}
    for size in sizes:
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            encoder.embed_queries(texts[:size])
            seconds.append(time.perf_counter() - started)
        report[str(size)] = round(1e3 * float(np.median(seconds)), 1)
    return {"model": "tiny ColQwen (unidoc_rl.standins.tiny_models)", "ms_per_batch": report}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--pages", type=int, default=10000)
    parser.add_argument("--tokens", type=int, default=780, help="vectors per page")
    parser.add_argument("--queries", type=int, default=240, help="stored query matrices the episodes draw from")
    parser.add_argument("--episodes", type=int, default=80, help="concurrent episodes per step (16 prompts x 5)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--mode", choices=("exact", "approx"), default="approx")
    parser.add_argument("--residency", default="mmap", help="the service's --residency")
    parser.add_argument("--max_batch_queries", type=int, default=128, help="the batched service's setting")
    parser.add_argument("--batch_wait_ms", type=int, default=2, help="the batched service's setting")
    parser.add_argument("--encoder_batches", type=int, nargs="*", default=[1, 8, 32], help="batch sizes timed")
    parser.add_argument("--workdir", default="/tmp/search_training_load")
    parser.add_argument(
        "--scale_corpus",
        default=None,
        help="serve search_scale_bench.py's cached index of --pages pages in this folder (its --corpus-dir), with "
        "its queries, instead of a synthetic corpus",
    )
    parser.add_argument("--keep", action="store_true", help="keep the index for a later run")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
        return
    workdir = Path(args.workdir)
    report = {"pages": args.pages, "mode": args.mode, "residency": args.residency}
    if not args.scale_corpus:
        report["tokens_per_page"] = args.tokens
    report["episodes_per_step"], report["steps"], report["cpu_count"] = args.episodes, args.steps, os.cpu_count()
    try:
        report["build"] = prepare(args, workdir)
        for name, batch in (("batched", args.max_batch_queries), ("unbatched", 0)):
            service, url = start_service(args, batch)
            try:
                report[name] = asyncio.run(grpo_steps(url, service.pid, args))
            finally:
                service.terminate()
                service.wait(timeout=60)
        report["batched_vs_unbatched_queries_per_s"] = round(
            report["batched"]["queries_per_s"] / report["unbatched"]["queries_per_s"], 2
        )
        if args.encoder_batches:
            report["real_encoder"] = encoder_batches(args.encoder_batches)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
