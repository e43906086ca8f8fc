"""The same evaluation episodes through two engines (`vllm serve` through `OpenAIPolicyClient`, and the local engine),
for the served-parity test and `benchmarks/vllm_bench.py`.

An untrained policy rarely writes a valid search, so its episodes would never show a page. `SearchFirst` makes the
first turn of every trajectory a search for the question's first words and lets the engine generate every later
turn, with the pages that search showed; `agreement` compares two runs' engine turns token by token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

from unidoc_rl.env.actions import SearchAction, format_action
from unidoc_rl.eval.__main__ import reward_settings
from unidoc_rl.eval.runner import Evaluator
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.standins.eval_policies import find_question


@dataclass(frozen=True)
class EngineTurn:
    prompt_ids: list[int]
    token_ids: list[int]
    log_probs: list[float] | None
    images: int


class SearchFirst(LLMServerClient):
    """Searches the question's first words (as many as fit the turn's `max_tokens`) on each trajectory's first turn,
    then lets `engine` generate every later turn. `turns[request_id]` records the engine's turns of a trajectory,
    `questions[request_id]` its question."""

    def __init__(self, engine: Any, tokenizer, known_questions: list[str]):
        super().__init__(config=None)
        self.engine = engine
        self.tokenizer = tokenizer
        self.known_questions = known_questions
        self.turns: dict[str, list[EngineTurn]] = {}
        self.questions: dict[str, str] = {}

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs) -> TokenOutput:
        if request_id not in self.questions:
            question = self.questions[request_id] = find_question(self.tokenizer, prompt_ids, self.known_questions)
            self.turns[request_id] = []
            ids = self._search(question, int(sampling_params.get("max_tokens") or 64))
            return TokenOutput(token_ids=ids, log_probs=[0.0] * len(ids), stop_reason="completed")
        output = await self.engine.generate(
            request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, image_data=image_data
        )
        turn = EngineTurn(list(prompt_ids), list(output.token_ids), output.log_probs, len(image_data or []))
        self.turns[request_id].append(turn)
        return output

    def by_question(self) -> dict[str, list[EngineTurn]]:
        """Engine turns per question (for runs with one trajectory per question)."""
        return {self.questions[request_id]: turns for request_id, turns in self.turns.items()}

    def generated_tokens(self) -> int:
        return sum(len(turn.token_ids) for turns in self.turns.values() for turn in turns)

    def _search(self, question: str, max_tokens: int) -> list[int]:
        words = question.split()
        for count in range(len(words), 0, -1):
            ids = self.tokenizer.encode(format_action(SearchAction(" ".join(words[:count]))), add_special_tokens=False)
            if len(ids) <= max_tokens:
                break
        return ids

    async def aclose(self) -> None:
        close = getattr(self.engine, "aclose", None)
        if close is not None:
            await close()


async def search_first_episodes(
    engine, processor, config, samples, search_url: str, concurrency: int = 1
) -> tuple[list[dict], SearchFirst]:
    """Result records (as `results.jsonl` holds them) and the client that recorded the engine's turns; with
    concurrency 1 the episodes run one after another, in order."""
    client = SearchFirst(engine, processor.tokenizer, [sample.query for sample in samples])
    scorer = EpisodeScorer(reward_settings(config, None, None, None))
    evaluator = Evaluator(config, client, processor, scorer, {"*": search_url})
    gate = asyncio.Semaphore(concurrency)

    async def one(sample):
        async with gate:
            return await evaluator.episode(sample, 0)

    try:
        results = await asyncio.gather(*(one(sample) for sample in samples))
    finally:
        await evaluator.aclose()
    return list(results), client


def agreement(first: dict[str, list[EngineTurn]], second: dict[str, list[EngineTurn]]) -> dict[str, Any]:
    """Over two runs' engine turns per question: episodes with the same token ids on every turn; generated tokens
    (of `first`) and how many agree up to each turn's first difference (later turns count only while the prompts
    are still the same); the largest log-prob difference over the agreeing tokens."""
    identical = tokens = agreeing = 0
    largest = 0.0
    for question, turns in first.items():
        other = second[question]
        identical += [turn.token_ids for turn in turns] == [turn.token_ids for turn in other]
        tokens += sum(len(turn.token_ids) for turn in turns)
        for mine, theirs in zip(turns, other, strict=False):
            if mine.prompt_ids != theirs.prompt_ids:
                break
            for index, (token, same) in enumerate(zip(mine.token_ids, theirs.token_ids, strict=False)):
                if token != same:
                    break
                agreeing += 1
                if mine.log_probs and theirs.log_probs:
                    largest = max(largest, abs(mine.log_probs[index] - theirs.log_probs[index]))
    return {
        "episodes": len(first),
        "identical_episodes": identical,
        "tokens": tokens,
        "agreeing_tokens": agreeing,
        "token_agreement": agreeing / tokens if tokens else None,
        "max_logprob_diff": largest,
    }
