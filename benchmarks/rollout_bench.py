"""Agent-loop overhead per turn, excluding generation: an instant scripted model drives verl's AgentLoopWorker.

For trajectories of 1..N turns (search, then crops, then an answer) it times the gap between consecutive generate
calls, which is everything the loop does for one turn (parse, search, crop, render the observation, merge tokens),
and the whole `generate_sequences` call (which adds verl's per-episode post-processing). The per-turn overhead
must stay flat as trajectories grow: no turn re-encodes the history.

    python benchmarks/rollout_bench.py --max_turns 10 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time

import numpy as np
from PIL import Image

from unidoc_rl.agent.search import StaticSearchBackend, register_inprocess_backend
from unidoc_rl.agent.verl_worker import build_agent_loop_worker, compose_verl_config, rope_processor
from unidoc_rl.env.actions import AnswerAction, BBoxAction, SearchAction, format_action
from unidoc_rl.env.prompts import load_prompts
from unidoc_rl.standins.scripted_client import ScriptedCall, ScriptedLLMClient
from unidoc_rl.standins.tiny_models import tiny_policy_path

logger = logging.getLogger("rollout_bench")


def make_pages(count: int, size: tuple[int, int]) -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    return {
        f"doc_{page}": Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
        for page in range(1, count + 1)
    }


def script_for(turns: int) -> list[str]:
    """search, bbox × (turns - 2), answer; a single turn is just the answer."""
    answer = format_action(AnswerAction("42"))
    if turns == 1:
        return [answer]
    crops = [format_action(BBoxAction(((10 + 3 * i, 20 + 2 * i, 90 + 3 * i, 110 + 2 * i),))) for i in range(turns - 2)]
    return [format_action(SearchAction("annual revenue")), *crops, answer]


class TimedClient(ScriptedLLMClient):
    """Replies instantly from the current script; records when each generate call arrives."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, [], record_prompts=False)
        self.arrivals: list[float] = []

    def start(self, script: list[str]) -> None:
        self.script, self.arrivals, self.calls, self._turns = script, [], [], {}

    def _reply_text(self, call: ScriptedCall) -> str:
        self.arrivals.append(time.perf_counter())
        return super()._reply_text(call)


async def run_once(worker, client: TimedClient, turns: int) -> dict:
    from verl.protocol import DataProto

    client.start(script_for(turns))
    batch = DataProto.from_single_dict(
        {
            "raw_prompt": np.array([load_prompts().prompt_messages("What was the annual revenue?")], dtype=object),
            "agent_name": np.array(["unidoc_agent"], dtype=object),
        }
    )
    started = time.perf_counter()
    output = await worker.generate_sequences(batch)
    total = time.perf_counter() - started
    episode = output.non_tensor_batch["episode"][0]
    if episode["num_turns"] != turns or episode["finish_reason"] != "answered":
        raise RuntimeError(f"benchmark episode went wrong: {episode}")
    gaps = [later - earlier for earlier, later in zip(client.arrivals, client.arrivals[1:], strict=False)]
    return {"total_s": total, "turn_gaps_s": gaps}


async def bench(args) -> dict:
    path = str(tiny_policy_path())
    processor = rope_processor(path)
    pages = make_pages(3, (args.page_width, args.page_height))
    url = register_inprocess_backend("rollout-bench", StaticSearchBackend(pages, {"annual revenue": list(pages)}))
    config = compose_verl_config(
        [
            f"actor_rollout_ref.model.path={path}",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.prompt_length=1024",
            f"actor_rollout_ref.rollout.response_length={args.response_length}",
        ],
        {"unidoc_agent": {"search_url": url, "max_turns": args.max_turns, "max_images": args.max_turns + 3}},
    )
    client = TimedClient(processor.tokenizer)
    with contextlib.redirect_stdout(sys.stderr):  # verl prints progress to stdout; stdout carries only the JSON
        worker = build_agent_loop_worker(config, client, processor=processor)
    await run_once(worker, client, 3)  # warm-up: tokenizer caches, thread pool
    rows = []
    for turns in range(1, args.max_turns + 1):
        runs = [await run_once(worker, client, turns) for _ in range(args.repeats)]
        total_ms = statistics.median(run["total_s"] for run in runs) * 1000
        # Gap i is the loop's work between generate call i and i+1: observation for turn i+1's input.
        gaps = [statistics.median(run["turn_gaps_s"][i] for run in runs) * 1000 for i in range(turns - 1)]
        crop_gaps = gaps[1:]  # gaps after the first (search) turn are crop turns
        rows.append(
            {
                "turns": turns,
                "episode_ms": round(total_ms, 2),
                "episode_ms_per_turn": round(total_ms / turns, 2),
                "search_turn_ms": round(gaps[0], 2) if gaps else None,
                "crop_turn_ms_mean": round(statistics.fmean(crop_gaps), 2) if crop_gaps else None,
                "crop_turn_ms_last": round(crop_gaps[-1], 2) if crop_gaps else None,
            }
        )
        logger.info("%d turns: %s", turns, rows[-1])
    longest = rows[-1]
    first_crop = next(row["crop_turn_ms_mean"] for row in rows if row["crop_turn_ms_mean"] is not None)
    return {
        "benchmark": "rollout_loop_overhead",
        "model": "instant scripted client; tiny Qwen2.5-VL processor",
        "page_size": [args.page_width, args.page_height],
        "repeats": args.repeats,
        "rows": rows,
        "per_turn_ms_flatness": {
            "first_crop_turn_ms": first_crop,
            "last_crop_turn_ms_at_max_turns": longest["crop_turn_ms_last"],
            "ratio_last_to_first": round(longest["crop_turn_ms_last"] / first_crop, 3)
            if longest["crop_turn_ms_last"]
            else None,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_turns", type=int, default=10, help="longest trajectory (turns)")
    parser.add_argument("--repeats", type=int, default=5, help="episodes per length (median reported)")
    parser.add_argument("--page_width", type=int, default=1240, help="raw page width in pixels")
    parser.add_argument("--page_height", type=int, default=1754, help="raw page height in pixels")
    parser.add_argument("--response_length", type=int, default=8192, help="rollout response budget in tokens")
    parser.add_argument("--log_level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level)
    if args.max_turns < 3:
        parser.error("--max_turns must be at least 3 (search, crop, answer)")
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
