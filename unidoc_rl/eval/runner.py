"""Episodes under the training rules, scored as the reward scores them, written as resumable result lines.

Every episode runs through verl's `AgentLoopWorker` (the project's worker, minus the trainer's tensors: see
`unidoc_rl.eval.worker`) and `UniDocAgentLoop` exactly as in training's validation: the same composed trainer
config (`configs/unidoc_grpo.yaml` and an optional experiment), so the same prompts, budgets, parser, coordinate
frames and pixel budget; sampling from the rollout's `val_kwargs` (greedy unless a temperature is given).
Scores come from the reward's `EpisodeScorer` (same components, same judge client and prompt); accuracy is the
judge's verdict on the final answer, also where the reward's format gate would not have asked the judge.

`results.jsonl` gets one complete line per finished episode (an episode log line, `unidoc_rl.episode_log`), keyed
`benchmark/uid/sample_index`; a rerun skips keys already there, so a crash loses at most the episodes in flight.
An episode that raises (an unreachable policy endpoint) is logged to `errors.jsonl` and left for the next run.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from verl.protocol import DataProto

from unidoc_rl.agent.verl_worker import build_agent_loop_worker
from unidoc_rl.common.jsonl import JsonlLog
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.env.prompts import load_prompts
from unidoc_rl.episode_log import EpisodeLogLine, JudgeVerdict
from unidoc_rl.eval.metrics import episode_metrics, native_scores
from unidoc_rl.eval.samples import EvalSample
from unidoc_rl.eval.worker import EvaluationWorker
from unidoc_rl.rewards.answer_match import rule_based_score
from unidoc_rl.rewards.scorer import EpisodeScorer

logger = logging.getLogger(__name__)

AGENT_NAME = "unidoc_agent"
RESULTS_FILE = "results.jsonl"
ERRORS_FILE = "errors.jsonl"


def result_key(benchmark: str, uid: str, sample_index: int) -> str:
    return f"{benchmark}/{uid}/{sample_index}"


def read_results(path: Path) -> list[dict]:
    """Complete result lines, first occurrence of each key kept (a trailing partial line is ignored)."""
    if not path.exists():
        return []
    results, seen = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict) and result.get("key") not in seen:
            seen.add(result.get("key"))
            results.append(result)
    return results


@dataclass
class RunStats:
    episodes: int = 0
    skipped: int = 0
    """Episodes already in results.jsonl."""
    errors: int = 0
    wall_s: float = 0.0

    @property
    def episodes_per_s(self) -> float:
        return self.episodes / self.wall_s if self.wall_s else 0.0


class Evaluator:
    """Runs and scores episodes; one agent-loop worker per search URL (per benchmark, or one merged corpus)."""

    def __init__(
        self,
        config: DictConfig,
        llm_client,
        processor,
        scorer: EpisodeScorer,
        search_urls: dict[str, str],
    ):
        self.config = config
        self.llm_client = llm_client
        self.processor = processor
        self.scorer = scorer
        self.search_urls = search_urls
        self._workers: dict[str, Any] = {}
        self.prompts = load_prompts(AgentSettings.from_mapping(config.get("unidoc_agent")).prompt_template)

    def search_url(self, benchmark: str) -> str:
        url = self.search_urls.get(benchmark) or self.search_urls.get("*")
        if not url:
            raise ValueError(f"no search URL for benchmark {benchmark!r} (given for: {sorted(self.search_urls)})")
        return url

    def _worker(self, url: str):
        worker = self._workers.get(url)
        if worker is None:
            config = copy.deepcopy(self.config)
            OmegaConf.update(config, "unidoc_agent.search_url", url, force_add=True)
            worker = build_agent_loop_worker(
                config, self.llm_client, processor=self.processor, worker_class=EvaluationWorker
            )
            self._workers[url] = worker
        return worker

    def prompt(self, sample: EvalSample) -> list[dict]:
        """The question alone, worded by the agent's template as in the RL parquet: the agent loop renders the system
        prompt from its settings."""
        return [self.prompts.question_message(sample.query)]

    async def episode(self, sample: EvalSample, sample_index: int) -> dict:
        started = time.perf_counter()
        batch = DataProto.from_single_dict(
            {
                "raw_prompt": np.array([self.prompt(sample)], dtype=object),
                "agent_name": np.array([AGENT_NAME], dtype=object),
                "extra_info": np.array([{"uid": sample.uid, "index": sample_index}], dtype=object),
            }
        )
        batch.meta_info["validate"] = True
        output = await self._worker(self.search_url(sample.benchmark)).generate_sequences(batch)
        episode = EpisodeRecord.from_dict(output.non_tensor_batch["episode"][0])
        breakdown = await self.scorer.score(episode, sample.truth)
        judge = await self._accuracy(sample, episode, breakdown)
        prompt_width = output.batch["prompts"].shape[1]
        attention = output.batch["attention_mask"][0]
        tokens = {
            "prompt": int(attention[:prompt_width].sum()),
            "response": int(attention[prompt_width:].sum()),
            "model": int(output.batch["response_mask"][0].sum()),
        }
        tokens["total"] = tokens["prompt"] + tokens["response"]
        line = EpisodeLogLine(
            uid=sample.uid,
            episode=episode,
            reward=breakdown,
            benchmark=sample.benchmark,
            categories={name: list(values) for name, values in sample.categories.items()},
            key=result_key(sample.benchmark, sample.uid, sample_index),
            sample_index=sample_index,
            ground_truth=sample.truth,
            judge=judge,
            accuracy=judge.score,
            native=native_scores(sample, episode.answer),
            metrics=episode_metrics(episode, sample, self.scorer.settings.crop_iou_threshold),
            tokens=tokens,
            latency_s=time.perf_counter() - started,
            answer_format=sample.answer_format,
        )
        return line.to_dict()

    async def _accuracy(self, sample: EvalSample, episode: EpisodeRecord, breakdown) -> JudgeVerdict:
        """The judge's verdict on the final answer: the reward's when it asked, else the same judge asked here."""
        if breakdown.judge_called:
            source = "fallback" if breakdown.judge_fallback else ("cache" if breakdown.judge_cached else "judge")
            return JudgeVerdict(breakdown.answer, breakdown.judge_fallback, source)
        if not episode.answered:
            return JudgeVerdict(0.0, False, "no_answer")
        judge = self.scorer.judge
        if judge is None:
            scorer = self.scorer.settings.answer_scorer
            score = rule_based_score(episode.answer, sample.reference_answer, scorer.value)
            return JudgeVerdict(score, False, scorer.value)
        verdict = await judge.judge(sample.query, sample.reference_answer, episode.answer)
        return JudgeVerdict(verdict.score, verdict.fallback, verdict.source)

    async def run(
        self,
        samples: Sequence[EvalSample],
        out_dir: Path,
        n: int = 1,
        concurrency: int = 8,
        progress: bool = True,
    ) -> RunStats:
        out_dir = Path(out_dir)
        results_log = JsonlLog(out_dir / RESULTS_FILE)  # opening drops a partial line left by a crash
        errors_log = JsonlLog(out_dir / ERRORS_FILE)
        done = {result["key"] for result in read_results(out_dir / RESULTS_FILE)}
        todo = [
            (sample, index)
            for sample in samples
            for index in range(n)
            if result_key(sample.benchmark, sample.uid, index) not in done
        ]
        stats = RunStats(skipped=len(samples) * n - len(todo))
        semaphore = asyncio.Semaphore(concurrency)

        async def bounded(sample: EvalSample, index: int):
            async with semaphore:
                try:
                    return await self.episode(sample, index)
                except Exception as error:  # noqa: BLE001 - one failed episode never stops the run
                    logger.warning("episode %s failed: %s", result_key(sample.benchmark, sample.uid, index), error)
                    return {"key": result_key(sample.benchmark, sample.uid, index), "error": repr(error)[:1000]}

        started = time.perf_counter()
        correct = 0.0
        writer = _BatchWriter(results_log)
        bar = tqdm(total=len(todo), disable=not progress, desc="episodes", unit="ep", dynamic_ncols=True)
        try:
            for finished in asyncio.as_completed([bounded(sample, index) for sample, index in todo]):
                result = await finished
                if "error" in result:
                    stats.errors += 1
                    errors_log.write(result)
                else:
                    writer.add(result)
                    stats.episodes += 1
                    correct += result["accuracy"]
                elapsed = time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(
                    eps=f"{stats.episodes / elapsed:.2f}/s",
                    acc=f"{correct / stats.episodes:.3f}" if stats.episodes else "-",
                    errors=stats.errors,
                )
        finally:
            await writer.close()
            bar.close()
            results_log.close()
            errors_log.close()
        stats.wall_s = time.perf_counter() - started
        return stats

    async def aclose(self) -> None:
        await self.scorer.aclose()
        close = getattr(self.llm_client, "aclose", None)
        if close is not None:
            await close()


class _BatchWriter:
    """Appends result lines from a worker thread, so a write's fsync never stalls the episodes in flight; lines
    that finish while one write is on disk go out together in the next."""

    def __init__(self, log: JsonlLog):
        self.log = log
        self.pending: list[dict] = []
        self.task: asyncio.Task | None = None

    def add(self, result: dict) -> None:
        self.pending.append(result)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        while self.pending:
            batch, self.pending = self.pending, []
            await asyncio.to_thread(self.log.write_many, batch)

    async def close(self) -> None:
        if self.task is not None:
            await self.task
        if self.pending:
            await self._drain()
