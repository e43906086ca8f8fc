"""A policy served behind an OpenAI-compatible completions endpoint (`vllm serve CHECKPOINT`), as verl's
`LLMServerClient.generate` seam: token ids and images in, token ids and log-probs out.

Token-in/token-out holds over HTTP: the prompt goes out as token ids (`prompt: [int, ...]`), and the reply's
token ids are read from the choice (`return_token_ids`, vLLM's extension) rather than re-encoded from its text;
a server that does not return token ids is refused with a clear error. Stop strings, `include_stop_str_in_output`,
`logit_bias`, `top_k`, `repetition_penalty` and `skip_special_tokens` are vLLM sampling parameters sent in the
body. Page images travel as base64 PNG data URLs in the body field `images_field` (default
`multi_modal_data`: `{"image": [url, ...]}`), in the order of their placeholders in the prompt; PNG keeps the
displayed pixels exact. The trajectory's request id goes in the `X-Request-Id` header.

Connection errors, timeouts and 5xx/429 answers are retried with exponential backoff; other errors raise
`PolicyRequestError` naming the status and the server's message.

The transport is aiohttp (it ships with verl): under a few hundred concurrent requests httpx's connection pool
spends more CPU per request scanning its connections than everything else the client does. Each image's data URL
is encoded once and reused while the image lives (an episode re-sends every image shown so far on every turn).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import random
import weakref
from typing import Any

import aiohttp
from PIL import Image
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
_FORWARDED = ("temperature", "top_p", "repetition_penalty", "stop", "include_stop_str_in_output", "seed")


class PolicyRequestError(RuntimeError):
    pass


_encoded: dict[int, str] = {}
"""Data URL per live image, by id (PIL images are unhashable); an entry is dropped when its image is collected."""


def image_data_url(image: Image.Image) -> str:
    key = id(image)
    url = _encoded.get(key)
    if url is None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        _encoded[key] = url
        weakref.finalize(image, _encoded.pop, key, None)
    return url


def decode_data_url(url: str) -> Image.Image:
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise ValueError(f"not a base64 image data URL: {url[:40]!r}")
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


def completion_body(
    model: str, prompt_ids: list[int], sampling_params: dict[str, Any], images: list[Image.Image], images_field: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "prompt": [int(token) for token in prompt_ids],
        "max_tokens": int(sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens") or 512),
        "return_token_ids": True,
        "skip_special_tokens": False,
    }
    for name in _FORWARDED:
        if sampling_params.get(name) is not None:
            body[name] = sampling_params[name]
    top_k = sampling_params.get("top_k")
    if top_k is not None and int(top_k) > 0:
        body["top_k"] = int(top_k)
    if sampling_params.get("logit_bias"):
        body["logit_bias"] = {str(int(token)): float(bias) for token, bias in sampling_params["logit_bias"].items()}
    if sampling_params.get("logprobs"):
        body["logprobs"] = 0
    if images:
        body[images_field] = {"image": [image_data_url(image) for image in images]}
    return body


def parse_choice(payload: Any, want_logprobs: bool) -> tuple[list[int], list[float] | None]:
    try:
        choice = payload["choices"][0]
    except (TypeError, KeyError, IndexError):
        raise PolicyRequestError(f"not a completion: {str(payload)[:200]!r}") from None
    token_ids = choice.get("token_ids")
    if not isinstance(token_ids, list) or not all(isinstance(token, int) for token in token_ids):
        raise PolicyRequestError(
            "the completion carries no token ids (choices[0].token_ids); serve the policy with vLLM, whose "
            "completions API returns them for return_token_ids=true, so model output is never re-tokenized"
        )
    if not want_logprobs:
        return token_ids, None
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    if not isinstance(logprobs, list) or len(logprobs) != len(token_ids):
        raise PolicyRequestError("the completion's logprobs.token_logprobs do not align with its token ids")
    return token_ids, [float(value) for value in logprobs]


class OpenAIPolicyClient(LLMServerClient):
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 256,
        images_field: str = "multi_modal_data",
    ):
        super().__init__(config=None)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_connections = max_connections
        self.images_field = images_field
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
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
        body = await asyncio.to_thread(
            completion_body,
            self.model,
            list(prompt_ids),
            dict(sampling_params),
            list(image_data or []),
            self.images_field,
        )
        payload = await self._post(body, str(request_id))
        token_ids, logprobs = parse_choice(payload, bool(sampling_params.get("logprobs")))
        return TokenOutput(token_ids=token_ids, log_probs=logprobs, stop_reason="completed")

    async def _post(self, body: dict[str, Any], request_id: str) -> Any:
        last = "no attempt made"
        url = self.base_url + "/completions"
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
            try:
                async with self._session().post(url, json=body, headers={REQUEST_ID_HEADER: request_id}) as response:
                    status, text = response.status, await response.text()
            except (TimeoutError, aiohttp.ClientError) as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if status >= 500 or status == 429:
                last = f"HTTP {status}: {text[:200]}"
                continue
            if status >= 400:
                raise PolicyRequestError(f"policy endpoint refused the request: HTTP {status}: {text[:500]}")
            try:
                return json.loads(text)
            except ValueError:
                raise PolicyRequestError(f"policy endpoint sent no JSON: {text[:200]!r}") from None
        raise PolicyRequestError(
            f"policy endpoint {self.base_url} failed after {self.max_retries + 1} attempts ({last})"
        )

    async def aclose(self) -> None:
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None:
            await session.close()
