"""Reward-stage wall time against a judge with fixed latency: our reward stage vs the reference design.

The judge is the scripted OpenAI-compatible server (exact-match grader) in its own process, answering each request
`--latency-s` after it arrives. A real judge runs on other machines; here it shares the 2 CPU cores with the client,
so the bench reports the judge server's CPU per request next to the client's. Both designs send the same rendered
judge prompt to the same server:
- ours: verl's reward-loop entry point, `UniDocRewardManager.run_single`, on every finished trajectory at once
  (each a DataProto shaped as the agent-loop worker sends it, built before timing): format gate, dense components,
  async judge client (bounded concurrency, requests sent in waves, timeouts, retries, cache, fallback);
- reference: a ThreadPoolExecutor with 10 workers, each sending one blocking `chat.completions.create` per trajectory.

Workloads of `--trajectories` episodes (groups of 5 per question, as in GRPO):
- unique_answers: every trajectory well-formed with a distinct answer, so every one needs a judge call (worst case);
- grpo_groups: answers repeat within a group and some trajectories fail the format gate, as in real rollouts;
- unique_answers_via_judge_service: as unique_answers, with the trainer talking to the project's judge service
  (evaluator_api, a third process in front of the same judge server); concurrent trajectories share one `/eval`.

The judge server (and the judge service) run in spawned processes that import this module: torch and verl are
imported only where our reward stage is built, so the servers' heaps stay small, and each server moves its start-up
heap out of the cyclic GC once serving, so a full collection does not pause one run of either design at random.

Runs of the two designs alternate (after one warm-up run each, which opens the connections a long-lived reward
worker keeps between steps); every run uses fresh questions and answers, so no verdict is cached across runs. The
median run is reported. Prints one JSON object. `python benchmarks/reward_bench.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import multiprocessing
import os
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import openai
import psutil

from unidoc_rl.env.episode import ActionKind, EpisodeRecord, FinishReason, SearchStep
from unidoc_rl.judge.prompt import load_template
from unidoc_rl.rewards.ground_truth import GroundTruth

GROUP_SIZE = 5
REFERENCE_WORKERS = 10
TARGET_SPEEDUP = 5.0

Workload = list[tuple[EpisodeRecord, GroundTruth]]


def serve_judge(latency_s: float, port_queue) -> None:
    from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge

    server = ScriptedLLMServer(exact_match_judge(latency_s)).start()
    gc.freeze()
    port_queue.put(server.port)
    while True:
        time.sleep(3600)


def serve_judge_service(llm_base_url: str, max_concurrency: int, port_queue) -> None:
    from unidoc_rl.judge.client import OpenAIJudge
    from unidoc_rl.judge.evaluator_api import create_app
    from unidoc_rl.judge.settings import JudgeSettings
    from unidoc_rl.standins.serving import ThreadedUvicorn

    judge = OpenAIJudge(JudgeSettings(base_url=llm_base_url, max_concurrency=max_concurrency))
    server = ThreadedUvicorn(create_app(judge))
    port = server.start()
    gc.freeze()
    port_queue.put(port)
    while True:
        time.sleep(3600)


def start_process(target, *args) -> tuple[multiprocessing.Process, int]:
    context = multiprocessing.get_context("spawn")
    port_queue = context.Queue()
    process = context.Process(target=target, args=(*args, port_queue), daemon=True)
    process.start()
    return process, port_queue.get(timeout=120)


def build_workload(trajectories: int, duplicated: bool, seed: int) -> Workload:
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


def as_trajectory(episode: EpisodeRecord, truth: GroundTruth):
    """One finished trajectory (a DataProto) as verl's agent-loop worker hands it to a reward-loop worker."""
    import numpy as np

    from unidoc_rl.standins.trajectories import reward_worker_trajectory

    non_tensor = {
        "data_source": np.array(["bench"]),
        "reward_model": np.array([{"style": "rule", "ground_truth": truth.to_dict()}]),
        "extra_info": np.array([{"index": int(episode.uid)}]),
        "tool_extra_fields": np.array([{"episode": episode.to_dict()}], dtype=object),
    }
    return reward_worker_trajectory(non_tensor)


@dataclass(frozen=True)
class Run:
    elapsed_s: float
    judge_calls: int
    http_requests: int
    client_cpu_s: float
    server_cpu_s: float


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


class OurRewardStage:
    """One long-lived reward manager, as in a reward-loop worker that scores step after step."""

    def __init__(self, judge_settings: dict, servers: list[psutil.Process]):
        from omegaconf import OmegaConf

        from unidoc_rl.rewards.verl_manager import UniDocRewardManager

        config = OmegaConf.create({"reward": {"reward_kwargs": {"preset": "unidoc", "judge": judge_settings}}})
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.manager = UniDocRewardManager(config, tokenizer=None)
        self.servers = servers

    def run(self, items: Workload) -> Run:
        trajectories = [as_trajectory(episode, truth) for episode, truth in items]
        stats = self.manager.scorer.judge.stats
        calls_before, http_before = stats.requests, stats.http_requests
        server_cpu_before = cpu_seconds(self.servers)
        started, cpu_started = time.perf_counter(), time.process_time()
        results = self.loop.run_until_complete(self._score(trajectories))
        elapsed, client_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        assert len(results) == len(items), "missing rewards"
        assert not any(r["reward_extra_info"]["judge_fallback"] for r in results), "judge fell back"
        return Run(
            elapsed,
            stats.requests - calls_before,
            stats.http_requests - http_before,
            client_cpu,
            cpu_seconds(self.servers) - server_cpu_before,
        )

    async def _score(self, trajectories: list) -> list[dict]:
        return list(await asyncio.gather(*(self.manager.run_single(t) for t in trajectories)))

    def close(self) -> None:
        self.loop.run_until_complete(self.manager.scorer.aclose())
        self.loop.close()
        asyncio.set_event_loop(None)


class ReferenceRewardStage:
    def __init__(self, llm_base_url: str):
        self.template = load_template()
        self.client = openai.OpenAI(base_url=llm_base_url, api_key="EMPTY", max_retries=0, timeout=30)

    def judge_one(self, item) -> float:
        episode, truth = item
        prompt = self.template.render(truth.query, truth.reference_answer, episode.answer or "")
        reply = self.client.chat.completions.create(
            model="judge", messages=[{"role": "user", "content": prompt}], temperature=0.0, max_tokens=32
        )
        return 1.0 if "True" in (reply.choices[0].message.content or "") else 0.0

    def run(self, items: Workload) -> Run:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=REFERENCE_WORKERS) as pool:
            scores = list(pool.map(self.judge_one, items))
        elapsed = time.perf_counter() - started
        assert len(scores) == len(items)
        return Run(elapsed, len(items), len(items), 0.0, 0.0)

    def close(self) -> None:
        self.client.close()


def measure(
    ours: OurRewardStage, reference: ReferenceRewardStage, trajectories: int, duplicated: bool, repeats: int, seed: int
) -> dict:
    workloads = [build_workload(trajectories, duplicated, seed=seed + run) for run in range(2 * repeats + 2)]
    warm_up = ours.run(workloads[0])
    reference.run(workloads[1][: 2 * REFERENCE_WORKERS])
    ours_runs, reference_runs = [], []
    for run in range(repeats):
        ours_runs.append(ours.run(workloads[2 + 2 * run]))
        reference_runs.append(reference.run(workloads[3 + 2 * run]))
    ours_s = statistics.median(r.elapsed_s for r in ours_runs)
    reference_s = statistics.median(r.elapsed_s for r in reference_runs)
    calls = ours_runs[0].judge_calls
    per_call_ms = lambda seconds, r: round(1000 * seconds / max(r.judge_calls, 1), 2)  # noqa: E731
    return {
        "ours_s": round(ours_s, 4),
        "reference_s": round(reference_s, 4),
        "speedup": round(reference_s / ours_s, 2),
        "ours_judge_calls": calls,
        "ours_http_requests": ours_runs[0].http_requests,
        "reference_judge_calls": reference_runs[0].judge_calls,
        "ours_judge_calls_per_s": round(calls / ours_s, 1),
        "reference_judge_calls_per_s": round(reference_runs[0].judge_calls / reference_s, 1),
        "ours_client_cpu_ms_per_call": statistics.median(per_call_ms(r.client_cpu_s, r) for r in ours_runs),
        "ours_server_cpu_ms_per_call": statistics.median(per_call_ms(r.server_cpu_s, r) for r in ours_runs),
        "ours_warm_up_run_s": round(warm_up.elapsed_s, 4),
        "ours_runs_s": [round(r.elapsed_s, 4) for r in ours_runs],
        "reference_runs_s": [round(r.elapsed_s, 4) for r in reference_runs],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trajectories", type=int, default=80)
    parser.add_argument("--latency-s", type=float, default=0.2, help="judge server latency per request")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per design (median reported)")
    parser.add_argument("--max-concurrency", type=int, default=128, help="our judge client's concurrency bound")
    parser.add_argument("--skip-service", action="store_true", help="leave out the judge-service workload")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    judge_process, judge_port = start_process(serve_judge, args.latency_s)
    processes = [judge_process]
    try:
        llm_url = f"http://127.0.0.1:{judge_port}/v1"
        reference = ReferenceRewardStage(llm_url)
        judge_server = [psutil.Process(judge_process.pid)]
        direct = OurRewardStage({"base_url": llm_url, "max_concurrency": args.max_concurrency}, judge_server)
        workloads = {
            "unique_answers": measure(direct, reference, args.trajectories, False, args.repeats, seed=0),
            "grpo_groups": measure(direct, reference, args.trajectories, True, args.repeats, seed=1000),
        }
        direct.close()
        if not args.skip_service:
            service_process, service_port = start_process(serve_judge_service, llm_url, args.max_concurrency)
            processes.append(service_process)
            service_settings = {"backend": "evaluator_service", "base_url": f"http://127.0.0.1:{service_port}"}
            via_service = OurRewardStage(service_settings, judge_server + [psutil.Process(service_process.pid)])
            workloads["unique_answers_via_judge_service"] = measure(
                via_service, reference, args.trajectories, False, args.repeats, seed=2000
            )
            via_service.close()
        reference.close()
    finally:
        for process in processes:
            process.terminate()
            process.join()
    report = {
        "benchmark": "reward_stage",
        "trajectories": args.trajectories,
        "judge_latency_s": args.latency_s,
        "reference_workers": REFERENCE_WORKERS,
        "ours_max_concurrency": args.max_concurrency,
        "target_speedup": TARGET_SPEEDUP,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "notes": "server CPU per call: the judge server's (and, via the judge service, the service's) CPU seconds "
        "per judge call during our runs; it shares the cores with the client here, a real judge does not. "
        "ours_warm_up_run_s: the untimed first run of a fresh reward stage (connections opened during the burst; for "
        "unique_answers also the client's first-call set-up), what a burst costs after the judge closed idle "
        "connections",
        "workloads": workloads,
        "meets_target_worst_case": workloads["unique_answers"]["speedup"] >= TARGET_SPEEDUP,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
