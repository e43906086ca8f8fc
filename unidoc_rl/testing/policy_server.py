"""An OpenAI-compatible completions server on loopback in front of any `LLMServerClient` (the local engine, a
scripted client): the stand-in for `vllm serve` in tests and benchmarks.

It speaks what `unidoc_rl.engine.openai_policy.OpenAIPolicyClient` sends: token-id prompts, base64 PNG images in
`multi_modal_data.image`, vLLM's sampling extensions, `X-Request-Id`; it answers with `choices[0].token_ids`
and `logprobs.token_logprobs`. Generation runs on the server's own event loop, as it would in another process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid

from unidoc_rl.engine.openai_policy import REQUEST_ID_HEADER, decode_data_url
from unidoc_rl.testing.serving import ThreadedUvicorn

_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty", "stop", "include_stop_str_in_output", "seed")


class PolicyServer:
    def __init__(
        self,
        llm_client,
        host: str = "127.0.0.1",
        port: int = 0,
        images_field: str = "multi_modal_data",
        delay_s: float = 0.0,
    ):
        self.llm_client = llm_client
        self.images_field = images_field
        self.delay_s = delay_s
        """Extra latency per completion (a remote server's service time)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self._server = ThreadedUvicorn(self._app, host=host, port=port, interface="asgi3")
        self._lock = threading.Lock()
        self.requests = 0

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
        if scope["method"] != "POST" or scope["path"] != "/v1/completions":
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
            status, payload = 200, await self._complete(body, headers.get(REQUEST_ID_HEADER.lower()))
        except (ValueError, KeyError, TypeError) as error:
            status, payload = 400, {"error": {"message": f"{type(error).__name__}: {error}"}}
        await _send_json(send, status, payload)

    async def _complete(self, body: dict, request_id: str | None) -> dict:
        with self._lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._generate(body, request_id)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _generate(self, body: dict, request_id: str | None) -> dict:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        prompt = body["prompt"]
        if not isinstance(prompt, list) or not all(isinstance(token, int) for token in prompt):
            raise ValueError("prompt must be a list of token ids")
        images = [decode_data_url(url) for url in (body.get(self.images_field) or {}).get("image", [])]
        params = {key: body[key] for key in _SAMPLING_KEYS if key in body}
        params["max_tokens"] = int(body.get("max_tokens", 16))
        params["logprobs"] = "logprobs" in body and body["logprobs"] is not None
        if body.get("logit_bias"):
            params["logit_bias"] = {int(token): float(bias) for token, bias in body["logit_bias"].items()}
        output = await self.llm_client.generate(
            request_id or uuid.uuid4().hex, prompt_ids=prompt, sampling_params=params, image_data=images or None
        )
        token_ids = [int(token) for token in output.token_ids]
        logprobs = {"token_logprobs": list(output.log_probs)} if params["logprobs"] and output.log_probs else None
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:12]}",
            "object": "text_completion",
            "model": body.get("model", "policy"),
            "choices": [
                {"index": 0, "text": "", "token_ids": token_ids, "logprobs": logprobs, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(token_ids)},
        }


async def _send_json(send, status: int, value) -> None:
    payload = json.dumps(value).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
