"""Reward-stage wall time against a judge with fixed latency: our async scorer vs the reference design.

The judge is the scripted OpenAI-compatible server (exact-match grader) in its own process, answering after
`--latency-s`. Both designs send the same rendered judge prompt to it:
- ours: `EpisodeScorer.score` on all trajectories at once (async client, bounded concurrency, format gate, cache);
- reference: a ThreadPoolExecutor with 10 workers, each sending one blocking request per trajectory.

Two workloads of `--trajectories` episodes (groups of 5 per question, as in GRPO):
- unique_answers: every trajectory well-formed with a distinct answer, so every one needs a judge call (worst case);
- grpo_groups: answers repeat within a group and some trajectories fail the format gate, as in real rollouts.

Prints one JSON object. `python benchmarks/reward_bench.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from unidoc_rl.episode import ActionKind, EpisodeRecord, FinishReason, SearchStep
from unidoc_rl.judge.prompt import load_template
from unidoc_rl.rewards.ground_truth import GroundTruth
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.rewards.settings import RewardSettings

GROUP_SIZE = 5
REFERENCE_WORKERS = 10
TARGET_SPEEDUP = 5.0


def serve_judge(latency_s: float, port_queue) -> None:
    from unidoc_rl.testing.scripted_llm_server import ScriptedLLMServer, exact_match_judge

    server = ScriptedLLMServer(exact_match_judge(latency_s)).start()
    port_queue.put(server.port)
    while True:
        time.sleep(3600)


def build_workload(trajectories: int, duplicated: bool, seed: int) -> list[tuple[EpisodeRecord, GroundTruth]]:
    rng = random.Random(seed)
    items = []
    for i in range(trajectories):
        question = i // GROUP_SIZE
        truth = GroundTruth.from_dict(
            {
                "query": f"Run {seed}: what is the total on page {question}?",
                "reference_answer": f"{question * 7} million",
                "gold_pages": [{"page_id": f"doc{question}_3"}],
            }
        )
        candidates = [f"doc{question}_{page}" for page in rng.sample(range(1, 20), 3)]
        if duplicated:
            answer = rng.choice([truth.reference_answer, f"{question} million", "unknown"])
            well_formed = rng.random() > 0.2
        else:
            answer, well_formed = f"answer {i} {rng.random():.6f}", True
        actions = [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.ANSWER]
        if not well_formed:
            actions = [ActionKind.SEARCH, ActionKind.INVALID, ActionKind.ANSWER]
        episode = EpisodeRecord(
            uid=str(i),
            searches=[SearchStep("q", candidates, candidates, selected=candidates[1])],
            shown_page_ids=candidates,
            actions=actions,
            answer=answer,
            finish_reason=FinishReason.ANSWERED,
        )
        items.append((episode, truth))
    return items


async def run_ours(workloads, base_url: str, max_concurrency: int) -> list[tuple[float, int, float]]:
    """Score each workload in turn with one long-lived scorer, as a reward worker does step after step (its
    connections stay open between steps). Workloads never repeat a (query, answer) pair, so the cache does not
    carry results from one run to the next."""
    settings = RewardSettings.from_mapping(
        {"preset": "unidoc", "judge": {"base_url": base_url, "max_concurrency": max_concurrency}}
    )
    scorer = EpisodeScorer(settings)
    runs = []
    for items in workloads:
        calls_before = scorer.judge.stats.requests
        started, cpu_started = time.perf_counter(), time.process_time()
        results = await asyncio.gather(*(scorer.score(episode, truth) for episode, truth in items))
        elapsed = time.perf_counter() - started
        assert len(results) == len(items) and not any(r.judge_fallback for r in results), "judge fell back"
        runs.append((elapsed, scorer.judge.stats.requests - calls_before, time.process_time() - cpu_started))
    await scorer.aclose()
    return runs


def run_reference(items, base_url: str) -> tuple[float, int]:
    template = load_template()
    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=30)

    def judge_one(item) -> float:
        episode, truth = item
        prompt = template.render(truth.query, truth.reference_answer, episode.answer or "")
        reply = client.chat.completions.create(
            model="judge", messages=[{"role": "user", "content": prompt}], temperature=0.0, max_tokens=32
        )
        return 1.0 if "True" in (reply.choices[0].message.content or "") else 0.0

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=REFERENCE_WORKERS) as pool:
        scores = list(pool.map(judge_one, items))
    elapsed = time.perf_counter() - started
    client.close()
    assert len(scores) == len(items)
    return elapsed, len(items)


def measure(trajectories: int, duplicated: bool, base_url: str, repeats: int, max_concurrency: int) -> dict:
    workloads = [build_workload(trajectories, duplicated, seed=run) for run in range(repeats + 1)]
    ours = asyncio.run(run_ours(workloads, base_url, max_concurrency))[1:]  # first run warms the connections
    run_reference(workloads[0][:10], base_url)
    reference = [run_reference(items, base_url) for items in workloads[1:]]
    ours_s = statistics.median(elapsed for elapsed, _, _ in ours)
    reference_s = statistics.median(elapsed for elapsed, _ in reference)
    ours_calls, reference_calls = ours[0][1], reference[0][1]
    cpu_per_call_ms = statistics.median(cpu / max(calls, 1) for _, calls, cpu in ours) * 1000
    return {
        "ours_s": round(ours_s, 4),
        "reference_s": round(reference_s, 4),
        "speedup": round(reference_s / ours_s, 2),
        "ours_judge_calls": ours_calls,
        "reference_judge_calls": reference_calls,
        "ours_judge_calls_per_s": round(ours_calls / ours_s, 1),
        "reference_judge_calls_per_s": round(reference_calls / reference_s, 1),
        "ours_client_cpu_ms_per_call": round(cpu_per_call_ms, 2),
        "ours_runs_s": [round(elapsed, 4) for elapsed, _, _ in ours],
        "reference_runs_s": [round(elapsed, 4) for elapsed, _ in reference],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=80)
    parser.add_argument("--latency-s", type=float, default=0.2, help="judge server latency per request")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per design (median reported)")
    parser.add_argument("--max-concurrency", type=int, default=128, help="our judge client's concurrency bound")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    context = multiprocessing.get_context("spawn")
    port_queue = context.Queue()
    server = context.Process(target=serve_judge, args=(args.latency_s, port_queue), daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{port_queue.get(timeout=120)}/v1"
        workloads = {
            name: measure(args.trajectories, duplicated, base_url, args.repeats, args.max_concurrency)
            for name, duplicated in (("unique_answers", False), ("grpo_groups", True))
        }
    finally:
        server.terminate()
        server.join()
    report = {
        "benchmark": "reward_stage",
        "trajectories": args.trajectories,
        "judge_latency_s": args.latency_s,
        "reference_workers": REFERENCE_WORKERS,
        "ours_max_concurrency": args.max_concurrency,
        "target_speedup": TARGET_SPEEDUP,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "workloads": workloads,
        "meets_target_worst_case": workloads["unique_answers"]["speedup"] >= TARGET_SPEEDUP,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
