"""Evaluation throughput: 1,000 episodes through the harness at bounded concurrency vs the same episodes one at a time.

Policy, search and judge are real HTTP servers on loopback, each in its own spawned process (they would run on other
machines; here they share the 2 CPU cores with the harness):
- policy: a scripted policy (search the question, select, answer) behind the loopback stand-in of `vllm serve`'s
  render and generate endpoints that the tests use, answering each turn `--policy-latency-s` after it arrives (a
  served model's service time; renders are not delayed);
- search: the static search service (fixed rankings, page images on disk);
- judge: the scripted exact-match OpenAI chat server.
The harness side is `unidoc_rl.eval.runner.Evaluator`, as `python -m unidoc_rl.eval` runs it: verl's agent-loop
worker with `UniDocAgentLoop`, `EpisodeScorer` with the judge client, one fsynced result line per episode.

Baseline: the same episodes run one at a time (concurrency 1), on the first `--sequential-episodes` samples (their
rate is what a sequential loop over all 1,000 would get). Reported: episodes/s of both, the ratio, and the harness
process's CPU seconds per episode. Prints one JSON object. `python benchmarks/eval_bench.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

PAGES_PER_DOC = 4
DOCS = 25


def world(n: int) -> tuple[list[dict], dict[str, list[str]]]:
    """n samples over DOCS x PAGES_PER_DOC pages; each question's ranking puts its gold page at rank 1 or 2."""
    samples, rankings = [], {}
    for i in range(n):
        doc, page = f"doc{i % DOCS}", 1 + i % PAGES_PER_DOC
        query = f"What does item {i} of {doc} say?"
        others = [f"{doc}_{p}" for p in range(1, PAGES_PER_DOC + 1) if p != page]
        rankings[query] = ([f"{doc}_{page}"] + others) if i % 2 else (others[:1] + [f"{doc}_{page}"] + others[1:])
        samples.append(
            {
                "uid": f"q{i}",
                "query": query,
                "reference_answer": f"answer {i}",
                "meta_info": {
                    "file_name": f"{doc}.pdf",
                    "reference_page": [page],
                    "benchmark": "bench",
                    "categories": {"parity": [str(i % 2)]},
                },
            }
        )
    return samples, rankings


def serve_policy(n: int, latency_s: float, port_queue) -> None:
    import gc
    import threading

    from unidoc_rl.compat import load_policy_processor
    from unidoc_rl.env.actions import AnswerAction, SearchAction, SelectAction, format_action
    from unidoc_rl.standins.eval_policies import Plan, plan_policy
    from unidoc_rl.standins.policy_server import PolicyServer
    from unidoc_rl.standins.scripted_client import ScriptedLLMClient
    from unidoc_rl.standins.tiny_models import tiny_policy_path

    samples, rankings = world(n)
    processor = load_policy_processor(tiny_policy_path())
    tokenizer = processor.tokenizer
    plans = {}
    for sample in samples:
        gold = f"{sample['meta_info']['file_name'][:-4]}_{sample['meta_info']['reference_page'][0]}"
        query = sample["query"]
        select = rankings[query].index(gold)
        plans[query] = Plan(
            tuple(
                format_action(action)
                for action in (SearchAction(query), SelectAction(select), AnswerAction(sample["reference_answer"]))
            )
        )
    client = ScriptedLLMClient(tokenizer, plan_policy(tokenizer, plans), record_prompts=True)
    server = PolicyServer(client, processor, delay_s=latency_s).start()
    port_queue.put(server.base_url)
    gc.freeze()
    threading.Event().wait()


def serve_search(n: int, pages_dir: str, port_queue) -> None:
    import gc
    import threading

    import numpy as np
    from PIL import Image

    from unidoc_rl.standins.static_search_server import StaticSearchServer

    _, rankings = world(n)
    rng = np.random.default_rng(0)
    pages = {
        f"doc{d}_{p}": Image.fromarray(rng.integers(0, 255, (400, 300, 3), dtype=np.uint8))
        for d in range(DOCS)
        for p in range(1, PAGES_PER_DOC + 1)
    }
    server = StaticSearchServer(pages, rankings, Path(pages_dir)).start()
    port_queue.put(server.url)
    gc.freeze()
    threading.Event().wait()


def serve_judge(port_queue) -> None:
    import gc
    import threading

    from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge

    server = ScriptedLLMServer(exact_match_judge()).start()
    port_queue.put(server.base_url)
    gc.freeze()
    threading.Event().wait()


def start(target, *args) -> tuple[multiprocessing.Process, str]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue), daemon=True)
    process.start()
    return process, queue.get(timeout=120)


async def run_harness(samples_path: Path, urls: dict, out_dir: Path, concurrency: int, limit: int | None) -> dict:
    from unidoc_rl.agent.verl_worker import rope_processor
    from unidoc_rl.engine.openai_policy import OpenAIPolicyClient, image_token_id
    from unidoc_rl.eval.__main__ import compose_eval_config, reward_settings
    from unidoc_rl.eval.runner import Evaluator
    from unidoc_rl.eval.samples import load_eval_samples
    from unidoc_rl.rewards.scorer import EpisodeScorer
    from unidoc_rl.standins.tiny_models import tiny_policy_path

    policy_path = str(tiny_policy_path())
    config = compose_eval_config(policy_path, ["unidoc_agent.max_tokens_per_turn=64"], "local_cpu")
    scorer = EpisodeScorer(reward_settings(config, urls["judge"], None, None))
    processor = rope_processor(policy_path)
    client = OpenAIPolicyClient(urls["policy"], "scripted", image_token_id=image_token_id(processor))
    evaluator = Evaluator(config, client, processor, scorer, {"*": urls["search"]})
    samples = load_eval_samples([samples_path])[:limit]
    cpu = time.process_time()
    stats = await evaluator.run(samples, out_dir, concurrency=concurrency, progress=False)
    cpu = time.process_time() - cpu
    await evaluator.aclose()
    return {
        "episodes": stats.episodes,
        "errors": stats.errors,
        "wall_s": round(stats.wall_s, 3),
        "episodes_per_s": round(stats.episodes_per_s, 2),
        "harness_cpu_ms_per_episode": round(1000 * cpu / max(1, stats.episodes), 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--sequential-episodes", type=int, default=50, help="episodes of the one-at-a-time baseline")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--policy-latency-s", type=float, default=0.05, help="service time of each policy turn")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        samples, _ = world(args.episodes)
        samples_path = tmp / "samples.json"
        samples_path.write_text(json.dumps(samples))
        processes = []
        urls = {}
        for name, target, extra in (
            ("policy", serve_policy, (args.episodes, args.policy_latency_s)),
            ("search", serve_search, (args.episodes, str(tmp / "pages"))),
            ("judge", serve_judge, ()),
        ):
            process, urls[name] = start(target, *extra)
            processes.append(process)
        try:
            # Warm-up: worker construction, connections, first prompt rendering.
            asyncio.run(run_harness(samples_path, urls, tmp / "warmup", args.concurrency, 8))
            concurrent = asyncio.run(run_harness(samples_path, urls, tmp / "concurrent", args.concurrency, None))
            sequential = asyncio.run(run_harness(samples_path, urls, tmp / "sequential", 1, args.sequential_episodes))
        finally:
            for process in processes:
                process.terminate()
    report = {
        "bench": "eval_bench",
        "episodes": args.episodes,
        "concurrency": args.concurrency,
        "policy_latency_s_per_turn": args.policy_latency_s,
        "turns_per_episode": 3,
        "harness": concurrent,
        "one_at_a_time": sequential,
        "speedup": round(concurrent["episodes_per_s"] / sequential["episodes_per_s"], 2)
        if sequential["episodes_per_s"]
        else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
