"""A loopback stand-in for `vllm serve` in front of any `LLMServerClient` (the local engine, a scripted client), for
tests and benchmarks: the two endpoints `OpenAIPolicyClient` uses, with vLLM's request and reply shapes.

- `POST /v1/chat/completions/render`: the images of the message, each as a run of image pad ids whose length the
  processor's pixel budget gives (as vLLM's processor expands it); `features.kwargs_data.image` carries each image
  as base64 PNG (vLLM carries processed tensors there; only its own generate endpoint reads them).
- `POST /inference/v1/generate`: checks that the placeholders sit exactly on the image pad runs of `token_ids`,
  decodes the images and passes ids, images and sampling parameters to the wrapped client; answers with
  `choices[0].token_ids`, `choices[0].logprobs.content` and `usage`.

`fault` makes it a server that lies (see `Fault`), for the client's checks. Generation runs on the server's own
event loop, as it would in another process.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import uuid
from enum import StrEnum

from PIL import Image

from unidoc_rl.engine.openai_policy import REQUEST_ID_HEADER, image_token_id
from unidoc_rl.engine.served_protocol import GENERATE_PATH, RENDER_PATH, decode_data_url, placeholder_runs
from unidoc_rl.env.vision import PixelBudget, display_size
from unidoc_rl.standins.serving import ThreadedUvicorn

_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "stop", "include_stop_str_in_output", "seed")


class Fault(StrEnum):
    NO_FEATURES = "no_features"
    """Render answers without features: a server that drops the image (text-only model, images disabled)."""
    PLACEHOLDER_LENGTH = "placeholder_length"
    """Render reports one placeholder token more per image: a server whose processor sizes images differently."""
    PROMPT_TOKENS = "prompt_tokens"
    """Generate counts one prompt token more than it was sent: a server that did not use the ids as they were."""


class PolicyServer:
    def __init__(
        self,
        llm_client,
        processor,
        host: str = "127.0.0.1",
        port: int = 0,
        delay_s: float = 0.0,
        fault: Fault | None = None,
    ):
        self.llm_client = llm_client
        self.image_token_id = image_token_id(processor)
        image_processor = processor.image_processor
        size = image_processor.size
        self.budget = PixelBudget(size["shortest_edge"], size["longest_edge"])
        self.factor = image_processor.patch_size * image_processor.merge_size
        self.delay_s = delay_s
        """Extra latency per generation (a remote server's service time)."""
        self.fault = Fault(fault) if fault else None
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0
        """Generate requests answered."""
        self.renders = 0
        """Images rendered."""
        self._server = ThreadedUvicorn(self._app, host=host, port=port, interface="asgi3")
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{self._server.url}/v1"

    def start(self) -> PolicyServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _app(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        routes = {RENDER_PATH: self._render, GENERATE_PATH: self._generate_counted}
        handler = routes.get(scope["path"]) if scope["method"] == "POST" else None
        if handler is None:
            await _send_json(send, 404, {"error": {"message": f"no route {scope['method']} {scope['path']}"}})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        try:
            body = json.loads(b"".join(chunks))
            status, payload = 200, await handler(body, headers.get(REQUEST_ID_HEADER.lower()))
        except (ValueError, KeyError, TypeError) as error:
            status, payload = 400, {"error": {"message": f"{type(error).__name__}: {error}"}}
        await _send_json(send, status, payload)

    def _placeholder_length(self, image: Image.Image) -> int:
        width, height = display_size(image.size, self.budget)
        return (width // self.factor) * (height // self.factor) + (self.fault is Fault.PLACEHOLDER_LENGTH)

    async def _render(self, body: dict, request_id: str | None) -> dict:
        urls = [
            part["image_url"]["url"]
            for message in body["messages"]
            for part in message["content"]
            if isinstance(part, dict) and part.get("type") == "image_url"
        ]
        token_ids, placeholders, hashes, kwargs = [], [], [], []
        for url in urls:
            length = self._placeholder_length(decode_data_url(url))
            placeholders.append({"offset": len(token_ids), "length": length})
            token_ids += [self.image_token_id] * length
            png = url.partition(",")[2]
            hashes.append(hashlib.sha256(base64.b64decode(png)).hexdigest())
            kwargs.append(png)
        with self._lock:
            self.renders += len(urls)
        features = {
            "mm_hashes": {"image": hashes},
            "mm_placeholders": {"image": placeholders},
            "kwargs_data": {"image": kwargs},
        }
        if not urls or self.fault is Fault.NO_FEATURES:
            features = None
        return {"request_id": request_id, "token_ids": token_ids, "features": features}

    async def _generate_counted(self, body: dict, request_id: str | None) -> dict:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._generate(body, request_id or uuid.uuid4().hex)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _images(self, token_ids: list[int], features: dict | None) -> list[Image.Image]:
        if not features:
            return []
        runs = placeholder_runs(token_ids, self.image_token_id)
        placed = [(int(p["offset"]), int(p["length"])) for p in features["mm_placeholders"]["image"]]
        if placed != runs:
            raise ValueError(f"placeholders {placed} are not the image pad runs {runs} of token_ids")
        return [decode_data_url(f"data:image/png;base64,{data}") for data in features["kwargs_data"]["image"]]

    async def _generate(self, body: dict, request_id: str) -> dict:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        token_ids = body["token_ids"]
        if not isinstance(token_ids, list) or not all(isinstance(token, int) for token in token_ids):
            raise ValueError("token_ids must be a list of token ids")
        images = self._images(token_ids, body.get("features"))
        sent = body["sampling_params"]
        params = {key: sent[key] for key in _SAMPLING_KEYS if key in sent}
        params["max_tokens"] = int(sent.get("max_tokens", 16))
        params["logprobs"] = sent.get("logprobs") is not None
        if sent.get("logit_bias"):
            params["logit_bias"] = {int(token): float(bias) for token, bias in sent["logit_bias"].items()}
        output = await self.llm_client.generate(
            request_id, prompt_ids=token_ids, sampling_params=params, image_data=images or None
        )
        ids = [int(token) for token in output.token_ids]
        logprobs = None
        if params["logprobs"] and output.log_probs:
            logprobs = {
                "content": [
                    {"token": f"token_id:{token}", "logprob": value}
                    for token, value in zip(ids, output.log_probs, strict=True)
                ]
            }
        prompt_tokens = len(token_ids) + (self.fault is Fault.PROMPT_TOKENS)
        return {
            "request_id": request_id,
            "model": body.get("model"),
            "choices": [{"index": 0, "token_ids": ids, "logprobs": logprobs, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(ids),
                "total_tokens": prompt_tokens + len(ids),
            },
        }


async def _send_json(send, status: int, value) -> None:
    payload = json.dumps(value).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
