"""Load test of the search service on loopback (prints JSON): N requests from C concurrent clients.

    python benchmarks/search_load.py                          # bm25 service over examples/corpus, 1,000 x 16
    python benchmarks/search_load.py --url http://127.0.0.1:8002 --requests 5000 --concurrency 32

Without --url it ingests the sample corpus into a temporary folder and starts the service as a subprocess on a
free loopback port. The run is bounded by --requests and --max_seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from unidoc_rl.standins.serving import free_port, wait_until_healthy

REPO_ROOT = Path(__file__).resolve().parents[1]


def start_service(workdir: Path) -> tuple[subprocess.Popen, str]:
    corpus = workdir / "corpus"
    shutil.copytree(REPO_ROOT / "examples" / "corpus", corpus)
    ingest = [sys.executable, str(REPO_ROOT / "search_engine" / "ingestion.py"), "--dataset_dir", str(corpus)]
    subprocess.run([*ingest, "--no_progress"], check=True, capture_output=True)
    port = free_port()
    service = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "search_engine" / "search_engine_api.py"), "--dataset_dir", str(corpus),
         "--port", str(port), "--log_level", "warning"],
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(service, url, timeout_s=60)
    return service, url


async def run_load(url: str, queries: list[str], requests: int, concurrency: int, max_seconds: float, top_k: int):
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    deadline = time.monotonic() + max_seconds

    async def worker(client: httpx.AsyncClient) -> None:
        for number in counter:
            if time.monotonic() > deadline:
                return
            body = {"queries": [queries[number % len(queries)]], "top_k": top_k}
            started = time.perf_counter()
            try:
                response = await client.post("/search", json=body)
                if response.status_code != 200 or len(response.json()["results"][0]) == 0:
                    errors.append(f"HTTP {response.status_code}")
            except httpx.HTTPError as error:
                errors.append(type(error).__name__)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    lat_ms = np.array(latencies) * 1e3
    return {
        "url": url,
        "requests": len(latencies),
        "concurrency": concurrency,
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 1),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 1),
        "max_ms": round(float(lat_ms.max()), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--url", default=None, help="a running service (default: start one on the sample corpus)")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max_seconds", type=float, default=300.0)
    parser.add_argument("--top_k", type=int, default=5)
    args = parser.parse_args(argv)
    queries = [sample["query"] for sample in json.loads((REPO_ROOT / "examples" / "samples.json").read_text())]
    workdir = Path(tempfile.mkdtemp(prefix="search_load_"))
    service = None
    try:
        url = args.url
        if url is None:
            service, url = start_service(workdir)
        report = asyncio.run(run_load(url, queries, args.requests, args.concurrency, args.max_seconds, args.top_k))
        report["health"] = httpx.get(f"{url}/health", timeout=10).json()
    finally:
        if service is not None:
            service.terminate()
            service.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
