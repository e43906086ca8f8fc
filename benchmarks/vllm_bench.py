"""Agent-loop throughput on a served policy (`vllm serve`, through `OpenAIPolicyClient`) vs the local engine, for
the same episodes, in one run.

The tiny policy, fp32 greedy, on the held-out samples of the bundled corpus (repeated to `--episodes`) with the real
search service on loopback. Each episode is a scripted search of the question, then policy turns with the pages it
showed (`unidoc_rl.standins.served_parity.SearchFirst`), through the evaluation harness (`Evaluator.episode`) at
`--concurrency` episodes in flight. vLLM runs from `.venv-vllm` (`make vllm-env`) with the settings of
`unidoc_rl.engine.vllm_server`; the local engine batches up to `--concurrency` requests. Both get one warm-up round of
two episodes first; vLLM's start-up is reported apart. Reported per engine: wall time, episodes/s, engine turns,
generated tokens (policy turns only), tokens/s and the CPU seconds of this (the harness) process, which holds the
local engine but not vLLM's processes; the ratios served / local; and the token agreement of the two runs over one
trajectory per question (batching can change a greedy choice where the tiny policy's logits are nearly tied).
Prints one JSON object.

    python benchmarks/vllm_bench.py --episodes 64 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from unidoc_rl.agent.verl_worker import rope_processor
from unidoc_rl.common.service_access import service_root
from unidoc_rl.engine.local_engine import LocalEngine
from unidoc_rl.engine.openai_policy import OpenAIPolicyClient, image_token_id
from unidoc_rl.engine.vllm_server import VllmServer
from unidoc_rl.eval.__main__ import compose_eval_config
from unidoc_rl.eval.samples import load_eval_samples
from unidoc_rl.standins.sample_corpus import sample_search_service
from unidoc_rl.standins.served_parity import agreement, search_first_episodes
from unidoc_rl.standins.serving import free_port
from unidoc_rl.standins.tiny_models import tiny_policy_path

HELDOUT = Path(__file__).resolve().parents[1] / "examples" / "samples_heldout.json"


async def timed(engine, processor, config, samples, search_url: str, concurrency: int) -> tuple[dict, dict]:
    await search_first_episodes(engine, processor, config, samples[:2], search_url, concurrency)
    started, cpu = time.perf_counter(), time.process_time()
    results, client = await search_first_episodes(engine, processor, config, samples, search_url, concurrency)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    tokens = client.generated_tokens()
    figures = {
        "episodes": len(results),
        "wall_s": round(wall, 2),
        "episodes_per_s": round(len(results) / wall, 3),
        "engine_turns": sum(len(turns) for turns in client.turns.values()),
        "generated_tokens": tokens,
        "generated_tokens_per_s": round(tokens / wall, 1),
        "harness_process_cpu_s": round(cpu, 2),
    }
    return figures, client.by_question()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=64, help="held-out samples, repeated to this many")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-tokens-per-turn", type=int, default=48)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    policy = tiny_policy_path()
    processor = rope_processor(policy)
    overrides = [
        f"unidoc_agent.max_turns={args.max_turns}",
        f"unidoc_agent.max_tokens_per_turn={args.max_tokens_per_turn}",
    ]
    config = compose_eval_config(str(policy), overrides, "local_cpu")
    heldout = load_eval_samples([HELDOUT])
    samples = [heldout[index % len(heldout)] for index in range(args.episodes)]
    with tempfile.TemporaryDirectory() as tmp, sample_search_service(Path(tmp) / "corpus") as search_url:
        started = time.perf_counter()
        with VllmServer(policy, free_port(), Path(tmp) / "vllm.log", served_model_name="tiny") as server:
            ready_s = time.perf_counter() - started
            version = httpx.get(service_root(server.base_url, "/v1") + "/version", timeout=10).json().get("version")
            client = OpenAIPolicyClient(server.base_url, "tiny", image_token_id=image_token_id(processor))
            served, served_turns = asyncio.run(timed(client, processor, config, samples, search_url, args.concurrency))
        engine = LocalEngine.from_pretrained(policy, max_batch_size=args.concurrency)
        local, local_turns = asyncio.run(timed(engine, processor, config, samples, search_url, args.concurrency))
    report = {
        "bench": "vllm_bench",
        "policy": "tiny Qwen2.5-VL (fp32, greedy)",
        "vllm": version,
        "vllm_ready_s": round(ready_s, 1),
        "episodes": args.episodes,
        "concurrency": args.concurrency,
        "max_turns": args.max_turns,
        "max_tokens_per_turn": args.max_tokens_per_turn,
        "served": served,
        "local": local,
        "ratio_episodes_per_s": round(served["episodes_per_s"] / local["episodes_per_s"], 2),
        "ratio_generated_tokens_per_s": round(served["generated_tokens_per_s"] / local["generated_tokens_per_s"], 2),
        "agreement": agreement(served_turns, local_turns),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
