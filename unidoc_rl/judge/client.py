"""Async judge clients that always return a score.

Every call is bounded by a semaphore, a per-attempt timeout and a retry budget with exponential backoff. Identical
(query, reference, answer) triples are judged once: finished verdicts are cached and concurrent duplicates (common in
GRPO groups) share one request. When the judge cannot produce a verdict the rule-based scorer answers instead and the
verdict says so (`source == "fallback"`), which the reward manager reports as `judge_fallback`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import random
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import httpx
import openai

from unidoc_rl.judge.prompt import load_template
from unidoc_rl.judge.settings import JudgeBackend, JudgeSettings
from unidoc_rl.judge.verdict import VerdictParseError, parse_verdict
from unidoc_rl.rewards.answer_match import rule_based_score

logger = logging.getLogger(__name__)

Triple = tuple[str, str, str]


@dataclass(frozen=True)
class JudgeVerdict:
    score: float
    source: Literal["judge", "cache", "fallback"]
    error: str | None = None

    @property
    def fallback(self) -> bool:
        return self.source == "fallback"


@dataclass
class JudgeStats:
    requests: int = 0
    """HTTP attempts sent, retries included."""
    verdicts: int = 0
    retries: int = 0
    cache_hits: int = 0
    fallbacks: int = 0


class JudgeRequestError(Exception):
    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class ResilientJudge(ABC):
    """Concurrency, timeouts, retries, caching and fallback around one request-per-triple transport."""

    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        self.stats = JudgeStats()
        self._cache: OrderedDict[Triple, float] = OrderedDict()
        self._inflight: dict[Triple, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._transport = None

    @abstractmethod
    def _open_transport(self):
        """Create the HTTP client; called once per event loop (connection pools are bound to their loop)."""

    @abstractmethod
    async def _close_transport(self, transport) -> None: ...

    @abstractmethod
    async def _request(self, transport, query: str, reference: str, answer: str) -> float:
        """One attempt. Raise JudgeRequestError (or a transport error) on failure."""

    async def judge(self, query: str, reference: str, answer: str) -> JudgeVerdict:
        key = (query, reference, answer)
        if key in self._cache:
            self._cache.move_to_end(key)
            self.stats.cache_hits += 1
            return JudgeVerdict(self._cache[key], "cache")
        shared = self._inflight.get(key)
        if shared is not None and shared.get_loop() is asyncio.get_running_loop():
            verdict = await asyncio.shield(shared)
            if verdict.fallback:
                self.stats.fallbacks += 1
                return verdict
            self.stats.cache_hits += 1
            return JudgeVerdict(verdict.score, "cache")
        task = asyncio.ensure_future(self._judge_uncached(*key))
        self._inflight[key] = task
        task.add_done_callback(lambda done: self._inflight.pop(key, None) if self._inflight.get(key) is done else None)
        return await asyncio.shield(task)

    async def judge_many(self, triples: list[Triple]) -> list[JudgeVerdict]:
        return list(await asyncio.gather(*(self.judge(*triple) for triple in triples)))

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._close_transport(self._transport)
            self._transport = None

    def fallback_score(self, reference: str, answer: str) -> float:
        return rule_based_score(answer, reference, self.settings.fallback_scorer)

    def _bind_to_running_loop(self):
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._semaphore = asyncio.Semaphore(self.settings.max_concurrency)
            self._transport = self._open_transport()
        return self._transport

    async def _judge_uncached(self, query: str, reference: str, answer: str) -> JudgeVerdict:
        transport = self._bind_to_running_loop()
        last_error = "no attempt made"
        attempts = 1 + self.settings.max_retries
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(attempt))
            try:
                async with self._semaphore:
                    self.stats.requests += 1
                    score = await asyncio.wait_for(
                        self._request(transport, query, reference, answer), self.settings.timeout_s
                    )
            except Exception as error:  # every failure mode of a remote model ends in a fallback, never a crash
                last_error = _describe(error)
                if not _is_retryable(error):
                    break
                continue
            self.stats.verdicts += 1
            self._remember((query, reference, answer), score)
            return JudgeVerdict(score, "judge")
        self.stats.fallbacks += 1
        logger.warning(
            "judge gave no verdict (%s); using the %s fallback", last_error, self.settings.fallback_scorer.value
        )
        return JudgeVerdict(self.fallback_score(reference, answer), "fallback", last_error)

    def _backoff(self, attempt: int) -> float:
        delay = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    def _remember(self, key: Triple, score: float) -> None:
        if self.settings.cache_size == 0:
            return
        self._cache[key] = score
        if len(self._cache) > self.settings.cache_size:
            self._cache.popitem(last=False)


class OpenAIJudge(ResilientJudge):
    """Judge through any OpenAI-compatible chat-completions endpoint."""

    def __init__(self, settings: JudgeSettings):
        super().__init__(settings)
        self.template = load_template(settings.prompt_template)

    def _open_transport(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key,
            timeout=self.settings.timeout_s,
            max_retries=0,
            http_client=_aiohttp_client_or_default(),
        )

    async def _close_transport(self, transport: openai.AsyncOpenAI) -> None:
        await transport.close()

    async def _request(self, transport: openai.AsyncOpenAI, query: str, reference: str, answer: str) -> float:
        # The client's raw `post` (its documented way to send custom requests) keeps auth, base URL, timeouts and
        # typed API errors but skips the typed-parameter transform and response models of `chat.completions.create`,
        # which cost more CPU per call than everything else in the reward stage together.
        body = {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": self.template.render(query, reference, answer)}],
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        completion = await transport.post("/chat/completions", body=body, cast_to=object)
        return parse_verdict(_message_content(completion))


class EvaluatorServiceJudge(ResilientJudge):
    """Judge through the project's judge service (`POST /eval`, see evaluator_api.py)."""

    def _open_transport(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.settings.max_concurrency)
        return httpx.AsyncClient(base_url=self.settings.base_url, timeout=self.settings.timeout_s, limits=limits)

    async def _close_transport(self, transport: httpx.AsyncClient) -> None:
        await transport.aclose()

    async def _request(self, transport: httpx.AsyncClient, query: str, reference: str, answer: str) -> float:
        payload = {"prompts": [{"query": query, "reference_answer": reference, "generated_answer": answer}], "bs": 1}
        response = await transport.post("/eval", json=payload)
        response.raise_for_status()
        scores = response.json()
        if not (isinstance(scores, list) and len(scores) == 1 and isinstance(scores[0], (int, float))):
            raise JudgeRequestError(f"/eval returned {str(scores)[:200]!r}, expected one float", retryable=True)
        if not 0.0 <= scores[0] <= 1.0:
            raise JudgeRequestError(f"/eval score {scores[0]} outside [0, 1]", retryable=False)
        return float(scores[0])


def _message_content(completion) -> str | None:
    try:
        return completion["choices"][0]["message"]["content"]
    except (TypeError, KeyError, IndexError):
        raise JudgeRequestError(f"not a chat completion: {str(completion)[:200]!r}", retryable=True) from None


def _aiohttp_client_or_default():
    """openai's aiohttp transport costs about half the CPU per request of its default httpx pool under high
    concurrency (it matters on small CPU nodes); aiohttp ships with verl, so fall back only where it is absent."""
    if importlib.util.find_spec("aiohttp") is None:
        return None
    return openai.DefaultAioHttpClient()


def build_judge(settings: JudgeSettings) -> ResilientJudge:
    if settings.backend is JudgeBackend.EVALUATOR_SERVICE:
        return EvaluatorServiceJudge(settings)
    return OpenAIJudge(settings)


def _status_code(error: Exception) -> int | None:
    if isinstance(error, openai.APIStatusError):
        return error.status_code
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code
    return None


def _is_retryable(error: Exception) -> bool:
    if isinstance(error, JudgeRequestError):
        return error.retryable
    status = _status_code(error)
    if status is not None:
        return status >= 500 or status in (408, 409, 429)
    return True


def _describe(error: Exception) -> str:
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(error, VerdictParseError):
        return f"unparseable verdict: {error}"
    status = _status_code(error)
    if status is not None:
        return f"HTTP {status}"
    return f"{type(error).__name__}: {error}"[:300]
