"""The main job end to end on the embedded default: CPU, tiny offline models, the bundled sample corpus.

    make demo            (or: python -m unidoc_rl.demo --out_dir outputs/demo --steps 4)

1. builds the tiny Qwen2.5-VL policy (once, into .cache/),
2. renders and indexes examples/corpus (bm25 over the PDF text layer),
3. starts the search service on loopback,
4. turns examples/samples.json into RL parquet, checked against the index,
5. trains the policy for a few GRPO steps with the local trainer (verl agent loop, dense reward, verl's losses),
6. prints a summary and leaves the checkpoint and the trajectory log under --out_dir.

The tiny policy has random weights: it proves the pipeline, not the method (expect rewards near 0).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("unidoc_rl.demo")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ingestion(corpus: Path, index_dir: Path, pages_dir: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "search_engine/ingestion.py"),
            "--dataset_dir",
            str(corpus),
            "--index_dir",
            str(index_dir),
            "--pages_dir",
            str(pages_dir),
            "--backend",
            "bm25",
        ],
        check=True,
    )


@contextmanager
def search_service(index_dir: Path, pages_dir: Path, log_path: Path, timeout_s: float = 60.0):
    """The search service as a subprocess on loopback; yields its URL once /health answers."""
    from search_engine.client import SearchClient, SearchError

    port = free_port()
    command = [
        sys.executable,
        str(REPO_ROOT / "search_engine/search_engine_api.py"),
        "--index_dir",
        str(index_dir),
        "--pages_dir",
        str(pages_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = SearchClient(url, timeout=2.0, retries=0)
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"search service exited with {process.returncode}; see {log_path}")
                try:
                    health = client.health()
                    break
                except SearchError as error:
                    if time.monotonic() > deadline:
                        message = f"search service did not answer within {timeout_s}s; see {log_path}"
                        raise RuntimeError(message) from error
                    time.sleep(0.3)
            logger.info("search service at %s: %s", url, health)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


def summarize(history: list[dict], checkpoint: Path, log_dir: Path, seconds: float) -> dict:
    reward_keys = sorted({k for step in history for k in step if k.startswith("train/reward")})
    last = history[-1]
    return {
        "steps": len(history),
        "seconds": round(seconds, 1),
        "reward_mean_over_steps": {
            key.removeprefix("train/"): round(sum(s.get(key, 0.0) for s in history) / len(history), 4)
            for key in reward_keys
        },
        "last_step": {
            key.removeprefix("train/"): round(last[key], 4)
            for key in ("train/reward", "train/turns", "train/crop_rate", "train/invalid_actions", "train/answered")
        },
        "seconds_per_step": round(sum(s["timing/step_s"] for s in history) / len(history), 2),
        "checkpoint": str(checkpoint),
        "trajectory_log": str(log_dir / "trajectories.jsonl"),
        "metrics_log": str(log_dir / "metrics.jsonl"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", type=Path, default=REPO_ROOT / "outputs/demo", help="everything is written here")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps")
    parser.add_argument("--fresh", action="store_true", help="delete --out_dir first (otherwise training resumes)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the local trainer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    out = args.out_dir.resolve()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    from unidoc_rl.data.prepare import main as prepare_main
    from unidoc_rl.testing.tiny_models import tiny_policy_path
    from unidoc_rl.trainer.local import LocalTrainer, compose_config

    logger.info("1/5 tiny policy: %s", tiny_policy_path())
    logger.info("2/5 rendering and indexing %s", REPO_ROOT / "examples/corpus")
    run_ingestion(REPO_ROOT / "examples/corpus", out / "index", out / "pages")
    with search_service(out / "index", out / "pages", out / "search_service.log") as url:
        logger.info("3/5 search service on %s", url)
        prepare_main(
            [
                "--samples",
                str(REPO_ROOT / "examples/samples.json"),
                "--out_dir",
                str(out / "data"),
                "--index_dir",
                str(out / "index"),
                "--val_size",
                "3",
            ]
        )
        logger.info("4/5 RL parquet in %s", out / "data")
        config = compose_config(
            [
                f"unidoc_agent.search_url={url}",
                f"data.train_files={out / 'data/train.parquet'}",
                f"data.val_files={out / 'data/val.parquet'}",
                f"local_trainer.total_steps={args.steps}",
                f"local_trainer.log_dir={out / 'logs'}",
                f"local_trainer.checkpoint_dir={out / 'checkpoints'}",
                *args.overrides,
            ]
        )
        logger.info("5/5 training %d GRPO steps", args.steps)
        trainer = LocalTrainer(config)
        try:
            history = trainer.fit()
            checkpoint = trainer.save()
        finally:
            trainer.close()
    if not history:
        raise SystemExit(f"nothing to train: {out / 'checkpoints'} already holds step {args.steps} (use --fresh)")
    summary = summarize(history, checkpoint, out / "logs", time.perf_counter() - started)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
