"""The services a teacher run talks to, each behind a bounded, retried, accounted call.

Every call belongs to a stage of one sample (plan, search, rerank, layout, region, read, decide, judge). A call is
retried on timeouts, connection errors and 5xx answers with exponential backoff, never on 4xx; a reply that should
be JSON and is not is asked for again a bounded number of times. When a stage gives up it raises `StageError`
naming the stage, and the sample fails with that stage recorded; nothing else is lost.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from PIL import Image

from search_engine.client import AsyncSearchClient, SearchError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    timeout_s: float = 120.0
    """Per attempt."""
    retries: int = 3
    """Attempts after the first, on timeouts, connection errors and 5xx."""
    backoff_s: float = 1.0
    """Wait before retry n is backoff_s * 2**(n-1)."""
    json_retries: int = 2
    """Extra requests when a reply that must be a JSON object is not one."""

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout_s}")
        for name in ("retries", "backoff_s", "json_retries"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def delay(self, attempt: int) -> float:
        return self.backoff_s * 2 ** (attempt - 1)


@dataclass
class StageStats:
    calls: int = 0
    """Requests sent (retries included)."""
    retries: int = 0
    """Requests that repeated a failed or malformed one."""
    failure: str | None = None


@dataclass
class StageLog:
    """Per-stage accounting of one sample (the `stages` field of its output line)."""

    stages: dict[str, StageStats] = field(default_factory=dict)

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(stats) for name, stats in self.stages.items()}


class StageError(Exception):
    """A stage of one sample gave up; the sample is recorded as failed at `stage`."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message


class Retryable(Exception):
    """A failed attempt worth repeating (timeout, connection error, 5xx, unreadable body)."""


async def with_retries(policy: RetryPolicy, stats: StageStats, stage: str, attempt_once):
    """Run `attempt_once` until it returns, retrying `Retryable` failures within the policy."""
    last = ""
    for attempt in range(policy.retries + 1):
        if attempt:
            stats.retries += 1
            await asyncio.sleep(policy.delay(attempt))
        stats.calls += 1
        try:
            return await attempt_once()
        except Retryable as error:
            last = str(error)
            if attempt < policy.retries:
                logger.warning("%s: attempt %d of %d failed (%s)", stage, attempt + 1, policy.retries + 1, last)
    raise StageError(stage, f"gave up after {policy.retries + 1} attempts ({last})")


def image_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def user_message(text: str, images: list[Image.Image] = ()) -> dict[str, Any]:
    """An OpenAI-style user message: the images (as PNG data URLs) first, then the text."""
    if not images:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in images]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json_object(text: str | None, required: Mapping[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """The JSON object in a reply (bare or in a ``` fence) with the required keys of the required types."""
    if not text:
        raise ValueError("empty reply")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    if not body.startswith("{"):
        start, end = body.find("{"), body.rfind("}")
        if start < 0 or end <= start:
            raise ValueError(f"no JSON object in reply {text[:120]!r}")
        body = body[start : end + 1]
    try:
        value = json.loads(body)
    except json.JSONDecodeError as error:
        raise ValueError(f"reply is not valid JSON ({error.msg}): {text[:120]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"reply is JSON but not an object: {text[:120]!r}")
    for key, kind in required.items():
        if key not in value:
            raise ValueError(f"reply lacks the key {key!r}: {text[:120]!r}")
        if not isinstance(value[key], kind) or (kind is int and isinstance(value[key], bool)):
            raise ValueError(f"reply key {key!r} has the wrong type ({type(value[key]).__name__}): {text[:120]!r}")
    return value


class ChatService:
    """An OpenAI-compatible chat endpoint (`base_url` ends in /v1), used for one role family (VLM or LLM)."""

    def __init__(
        self,
        base_url: str,
        model: str | None,
        policy: RetryPolicy,
        api_key: str = "EMPTY",
        temperature: float = 0.0,
        max_tokens: int = 1024,
    ):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.policy = policy
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=policy.timeout_s, headers={"Authorization": f"Bearer {api_key}"}
        )

    async def resolve_model(self) -> str:
        """The model to ask: the configured name, else the first one the endpoint lists (`GET /models`)."""
        if self.model:
            return self.model
        try:
            response = await self._http.get("/models")
            response.raise_for_status()
            self.model = str(response.json()["data"][0]["id"])
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as error:
            raise ValueError(f"{self.base_url}/models does not name a model ({error}); pass the model flag") from None
        return self.model

    async def complete(self, messages: list[dict[str, Any]], stats: StageStats, stage: str) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

        async def attempt() -> str:
            try:
                response = await self._http.post("/chat/completions", json=body)
            except httpx.TimeoutException as error:
                raise Retryable(f"timeout after {self.policy.timeout_s:g} s ({type(error).__name__})") from None
            except httpx.TransportError as error:
                raise Retryable(f"{type(error).__name__}: {error}") from None
            if response.status_code >= 500:
                raise Retryable(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise StageError(stage, f"HTTP {response.status_code}: {response.text[:300]}")
            try:
                content = response.json()["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise Retryable(f"malformed completion body: {response.text[:120]!r}") from None
            return content or ""

        return await with_retries(self.policy, stats, stage, attempt)

    async def complete_json(
        self,
        messages: list[dict[str, Any]],
        required: Mapping[str, type | tuple[type, ...]],
        stats: StageStats,
        stage: str,
    ) -> dict[str, Any]:
        """A reply parsed as a JSON object; a malformed one is asked for again up to `json_retries` times."""
        problem = ""
        for attempt in range(self.policy.json_retries + 1):
            if attempt:
                stats.retries += 1
            reply = await self.complete(messages, stats, stage)
            try:
                return parse_json_object(reply, required)
            except ValueError as error:
                problem = str(error)
                if attempt < self.policy.json_retries:
                    logger.warning("%s: reply %d is not the JSON asked for (%s)", stage, attempt + 1, problem)
        raise StageError(stage, f"no valid JSON after {self.policy.json_retries + 1} replies ({problem})")

    async def aclose(self) -> None:
        await self._http.aclose()


class AccountedSearch:
    """The search service as the agent's search backend, with retries and per-sample accounting.

    One shared HTTP client; `for_sample` gives a view that books its calls to that sample's `search` stage.
    """

    def __init__(self, url: str, policy: RetryPolicy, api_key: str | None = None):
        self.policy = policy
        self._client = AsyncSearchClient(url, timeout=policy.timeout_s, retries=0, api_key=api_key)

    def for_sample(self, log: StageLog) -> _SampleSearch:
        return _SampleSearch(self, log.stage("search"))

    async def _call(self, stats: StageStats, call):
        async def attempt():
            try:
                return await call()
            except SearchError as error:
                if error.status_code is None or error.status_code >= 500:
                    raise Retryable(str(error)) from None
                raise StageError("search", str(error)) from None

        return await with_retries(self.policy, stats, "search", attempt)

    async def aclose(self) -> None:
        await self._client.aclose()


class _SampleSearch:
    def __init__(self, service: AccountedSearch, stats: StageStats):
        self._service = service
        self._stats = stats

    async def search(self, queries: list[str], top_k: int | None = None):
        return await self._service._call(self._stats, lambda: self._service._client.search(queries, top_k=top_k))

    async def load_image(self, hit) -> Image.Image:
        return await self._service._call(self._stats, lambda: self._service._client.load_image(hit))
