"""Async judge clients that always return a score.

Every call is bounded by a semaphore, a per-attempt timeout and a retry budget with exponential backoff. Identical
(query, reference, answer) triples are judged once: finished verdicts are cached and concurrent duplicates (common in
GRPO groups) share one request. When the judge cannot produce a verdict the rule-based scorer answers instead and the
verdict says so (`source == "fallback"`), which the reward manager reports as `judge_fallback`.

A burst of new requests (a finished GRPO batch) is started in waves of `send_wave_size` per event-loop turn: each
wave is on the wire while the next is being built, so the judge works on the first requests while the client is
still busy. The judge service backend instead coalesces the triples of one turn into a single `POST /eval`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import random
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import httpx
import httpx2
import openai

from unidoc_rl.common.service_access import API_KEY_HEADER, service_root
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
    """Judge attempts, one per triple per try (retries included)."""
    http_requests: int = 0
    """HTTP requests sent; fewer than `requests` where one request carries several triples (judge service)."""
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

    sends_in_waves = True
    """Spread a burst of new requests over event-loop turns (see the module docstring)."""

    def __init__(self, settings: JudgeSettings):
        self.settings = settings
        self.stats = JudgeStats()
        self._cache: OrderedDict[Triple, float] = OrderedDict()
        self._inflight: dict[Triple, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._transport = None
        self._started_this_turn = 0

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
            self._started_this_turn = 0
            self._transport = self._open_transport()
        return self._transport

    async def _wait_for_send_turn(self) -> None:
        """Requests started in one event-loop turn beyond the first wave yield one turn per earlier wave. A yielded
        task resumes after everything the earlier waves scheduled (their request writes), so each wave reaches the
        socket before the next one is built."""
        if not self.sends_in_waves:
            return
        if self._started_this_turn == 0:
            self._loop.call_soon(self._end_turn)
        waves_ahead = self._started_this_turn // self.settings.send_wave_size
        self._started_this_turn += 1
        for _ in range(waves_ahead):
            await asyncio.sleep(0)

    def _end_turn(self) -> None:
        self._started_this_turn = 0

    async def _judge_uncached(self, query: str, reference: str, answer: str) -> JudgeVerdict:
        transport = self._bind_to_running_loop()
        last_error = "no attempt made"
        attempts = 1 + self.settings.max_retries
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(self._backoff(attempt))
            try:
                await self._wait_for_send_turn()
                async with self._semaphore, asyncio.timeout(self.settings.timeout_s):
                    self.stats.requests += 1
                    score = await self._request(transport, query, reference, answer)
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
        # One pooled connection per concurrent request, reused for as long as the judge keeps it alive.
        pool = self.settings.max_concurrency
        limits = httpx2.Limits(max_connections=pool, max_keepalive_connections=pool)
        return openai.AsyncOpenAI(
            base_url=self.settings.base_url,
            api_key=self.settings.api_key,
            timeout=self.settings.timeout_s,
            max_retries=0,
            http_client=_http_client(limits),
        )

    async def _close_transport(self, transport: openai.AsyncOpenAI) -> None:
        await transport.close()

    async def _request(self, transport: openai.AsyncOpenAI, query: str, reference: str, answer: str) -> float:
        # The client's raw `post` (its documented way to send custom requests) keeps auth, base URL, timeouts and
        # typed API errors but skips the typed-parameter transform and response models of `chat.completions.create`,
        # which cost more CPU per call than everything else in the reward stage together; the body comes back as
        # bytes and only the verdict's path through it is read.
        body = {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": self.template.render(query, reference, answer)}],
            "temperature": self.settings.temperature,
            "max_tokens": self.settings.max_tokens,
        }
        self.stats.http_requests += 1
        raw = await transport.post("/chat/completions", body=body, cast_to=bytes)
        return parse_verdict(_message_content(raw))


EVAL_ENDPOINT = "/eval"


class EvaluatorServiceJudge(ResilientJudge):
    """Judge through the project's judge service (`POST /eval`, see evaluator_api.py).

    Triples whose attempts start in the same event-loop turn share one `/eval` request (up to `service_batch_size`
    prompts); each triple keeps its own timeout, retries and fallback."""

    sends_in_waves = False  # the whole turn goes out as one request

    def __init__(self, settings: JudgeSettings):
        super().__init__(settings)
        self.base_url = service_root(settings.base_url, EVAL_ENDPOINT)  # the root or its /eval endpoint
        self._pending: list[tuple[Triple, asyncio.Future]] = []
        self._batch_tasks: set[asyncio.Task] = set()

    def _open_transport(self) -> httpx.AsyncClient:
        self._pending = []
        limits = httpx.Limits(max_connections=self.settings.max_concurrency)
        key = os.environ.get(self.settings.api_key_env)
        headers = {API_KEY_HEADER: key} if key else {}
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=self.settings.timeout_s, limits=limits, headers=headers
        )

    async def _close_transport(self, transport: httpx.AsyncClient) -> None:
        for task in list(self._batch_tasks):
            task.cancel()
        await asyncio.gather(*self._batch_tasks, return_exceptions=True)
        await transport.aclose()

    async def _request(self, transport: httpx.AsyncClient, query: str, reference: str, answer: str) -> float:
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._send_pending, transport)
        future = loop.create_future()
        self._pending.append(((query, reference, answer), future))
        return await future

    def _send_pending(self, transport: httpx.AsyncClient) -> None:
        pending = [(triple, future) for triple, future in self._pending if not future.done()]
        self._pending = []
        size = self.settings.service_batch_size
        for start in range(0, len(pending), size):
            task = asyncio.ensure_future(self._post_batch(transport, pending[start : start + size]))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)

    async def _post_batch(self, transport: httpx.AsyncClient, batch: list[tuple[Triple, asyncio.Future]]) -> None:
        prompts = [
            {"query": query, "reference_answer": reference, "generated_answer": answer}
            for (query, reference, answer), _ in batch
        ]
        self.stats.http_requests += 1
        try:
            response = await transport.post(EVAL_ENDPOINT, json={"prompts": prompts, "bs": len(prompts)})
            response.raise_for_status()
            scores = response.json()
            if not (isinstance(scores, list) and len(scores) == len(batch)):
                raise JudgeRequestError(
                    f"/eval returned {str(scores)[:200]!r}, expected {len(batch)} floats", retryable=True
                )
        except Exception as error:  # every triple of the batch gets the error and decides on its own retry
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), score in zip(batch, scores, strict=True):
            if future.done():
                continue
            if not isinstance(score, (int, float)) or isinstance(score, bool):
                future.set_exception(JudgeRequestError(f"/eval returned {score!r}, expected a float", retryable=True))
            elif not 0.0 <= score <= 1.0:
                future.set_exception(JudgeRequestError(f"/eval score {score} outside [0, 1]", retryable=False))
            else:
                future.set_result(float(score))


def _message_content(raw: bytes) -> str | None:
    try:
        return json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, TypeError, KeyError, IndexError):
        raise JudgeRequestError(f"not a chat completion: {raw[:200]!r}", retryable=True) from None


def _http_client(limits: httpx2.Limits) -> httpx2.AsyncClient:
    """openai's aiohttp transport costs a quarter of the CPU per request of its default httpx pool under high
    concurrency (it matters on small CPU nodes); aiohttp ships with verl, so fall back only where it is absent."""
    if importlib.util.find_spec("aiohttp") is None:
        return openai.DefaultAsyncHttpxClient(limits=limits)
    return openai.DefaultAioHttpClient(limits=limits)


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
