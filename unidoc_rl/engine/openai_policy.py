"""A policy served by stock `vllm serve CHECKPOINT` (0.24 or later), as verl's `LLMServerClient.generate` seam:
the agent loop's token ids and page images in, token ids and log-probs out.

Each page image is rendered once by the server (`/v1/chat/completions/render`: its processed pixel tensors and
placeholder length) and kept while the image lives (an episode re-sends every image shown so far on every turn).
Each turn goes to `/inference/v1/generate` as the agent loop's own prompt ids, unchanged (so turns stay
token-exact: model output is never re-tokenized), with every image placed at the offset of its `<|image_pad|>` run
in those ids. `unidoc_rl.engine.served_protocol` holds the wire format and the checks: a placeholder count or
length that differs from the agent loop's, an image rendered without features, a prompt length the server counted
differently, a reply without token ids or with misaligned log-probs raise `PolicyRequestError` naming the cause.

Sampling parameters (stop strings, `include_stop_str_in_output`, `logit_bias`, `top_k`, `skip_special_tokens`)
are vLLM `SamplingParams` fields; the trajectory's request id goes in the `X-Request-Id` header. Connection errors,
timeouts and 5xx/429 answers are retried with exponential backoff; other errors raise `PolicyRequestError` naming
the status and the server's message.

The transport is aiohttp (it ships with verl): under a few hundred concurrent requests httpx's connection pool
spends more CPU per request scanning its connections than everything else the client does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import weakref
from typing import Any

import aiohttp
from PIL import Image
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

from unidoc_rl.common.service_access import service_root
from unidoc_rl.engine.served_protocol import (
    GENERATE_PATH,
    RENDER_PATH,
    PolicyRequestError,
    RenderedImage,
    generate_body,
    image_features,
    parse_generation,
    parse_render,
    render_body,
)

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"

__all__ = ["REQUEST_ID_HEADER", "OpenAIPolicyClient", "PolicyRequestError", "image_token_id"]


def image_token_id(processor) -> int:
    """The image pad id of a Qwen2-VL-family processor (the token whose runs stand for an image's features)."""
    return int(processor.tokenizer.convert_tokens_to_ids(processor.image_token))


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise PolicyRequestError(f"policy endpoint sent no JSON: {text[:200]!r}") from None


class OpenAIPolicyClient(LLMServerClient):
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        image_token_id: int,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 256,
    ):
        super().__init__(config=None)
        self.root = service_root(base_url, "/v1")  # the server root or its OpenAI-compatible /v1 root
        self.model = model
        self.image_token_id = int(image_token_id)
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_connections = max_connections
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._rendered: dict[int, RenderedImage] = {}
        """Rendered features per live image, by id (PIL images are unhashable); dropped when the image is collected."""

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            headers = {"Content-Type": "application/json"}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.max_connections),
            )
            self._sessions[loop] = session
        return session

    async def generate(
        self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None, **kwargs
    ) -> TokenOutput:
        if video_data:
            raise ValueError("OpenAIPolicyClient does not send video inputs")
        prompt_ids = [int(token) for token in prompt_ids]
        rendered = await self._render_all(list(image_data or []), str(request_id))
        features = image_features(prompt_ids, self.image_token_id, rendered)
        data = await asyncio.to_thread(
            lambda: json.dumps(generate_body(self.model, prompt_ids, dict(sampling_params), features))
        )
        payload = _loads(await self._post(GENERATE_PATH, data, str(request_id)))
        token_ids, logprobs = parse_generation(payload, len(prompt_ids), bool(sampling_params.get("logprobs")))
        return TokenOutput(token_ids=token_ids, log_probs=logprobs, stop_reason="completed")

    async def _render_all(self, images: list[Image.Image], request_id: str) -> list[RenderedImage]:
        missing = {id(image): image for image in images if id(image) not in self._rendered}
        if missing:
            results = await asyncio.gather(*(self._render(image, request_id) for image in missing.values()))
            for image, rendered in zip(missing.values(), results, strict=True):
                key = id(image)
                if key not in self._rendered:
                    weakref.finalize(image, self._rendered.pop, key, None)
                self._rendered[key] = rendered
        return [self._rendered[id(image)] for image in images]

    async def _render(self, image: Image.Image, request_id: str) -> RenderedImage:
        data = await asyncio.to_thread(lambda: json.dumps(render_body(self.model, image)))
        text = await self._post(RENDER_PATH, data, request_id)
        return parse_render(await asyncio.to_thread(_loads, text), self.image_token_id)

    async def _post(self, path: str, data: str, request_id: str) -> str:
        last = "no attempt made"
        url = self.root + path
        for attempt in range(self.max_retries + 1):
            if attempt:
                logger.warning("retrying %s (attempt %d) after %s", url, attempt + 1, last)
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
            try:
                async with self._session().post(url, data=data, headers={REQUEST_ID_HEADER: request_id}) as response:
                    status, text = response.status, await response.text()
            except (TimeoutError, aiohttp.ClientError) as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if status >= 500 or status == 429:
                last = f"HTTP {status}: {text[:200]}"
                continue
            if status >= 400:
                raise PolicyRequestError(f"policy endpoint refused {path}: HTTP {status}: {text[:500]}")
            return text
        raise PolicyRequestError(f"policy endpoint {url} failed after {self.max_retries + 1} attempts ({last})")

    async def aclose(self) -> None:
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()
