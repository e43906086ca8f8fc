"""A real OpenAI-compatible chat server on loopback whose every reply is scripted.

Tests and demos use it to stand in for a remote LLM (the judge): each request to `/v1/chat/completions` is passed to
a script that decides the reply: content, HTTP status, latency, a hang until the server stops, or a garbage body.
The server runs uvicorn in a background thread, so async and sync clients talk to it over real HTTP. Chat completions
are answered by a bare ASGI handler rather than a FastAPI route: the stand-in judge shares the CPU with the client in
benchmarks, and its own per-request cost should stay small next to the client's (a real judge runs elsewhere).

    with ScriptedLLMServer(exact_match_judge(latency_s=0.2)) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="x")

CLI (a judge that grades by normalized exact match): `python -m unidoc_rl.standins.scripted_llm_server --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fastapi import FastAPI

from unidoc_rl.judge.prompt import extract_sections
from unidoc_rl.rewards.answer_match import exact_match
from unidoc_rl.standins.serving import ThreadedUvicorn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    content: str | None = ""
    """Assistant message content of a well-formed completion."""
    status: int = 200
    delay_s: float = 0.0
    hang: bool = False
    """Never answer; the connection is released when the server stops."""
    raw_body: str | None = None
    """Send this body verbatim instead of a completion (malformed replies)."""


@dataclass(frozen=True)
class ChatRequest:
    index: int
    """0-based arrival order."""
    body: dict

    @property
    def prompt(self) -> str:
        messages = self.body.get("messages") or []
        user = [m.get("content", "") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        return user[-1] if user and isinstance(user[-1], str) else ""


Script = Callable[[ChatRequest], Reply]


def replies_in_order(replies: Sequence[Reply], then: Script | Reply | None = None) -> Script:
    """Reply i to request i; afterwards `then` (a script or a fixed reply; default: repeat the last reply)."""
    replies = list(replies)

    def script(request: ChatRequest) -> Reply:
        if request.index < len(replies):
            return replies[request.index]
        if callable(then):
            return then(request)
        return then if then is not None else replies[-1]

    return script


def exact_match_judge(latency_s: float = 0.0) -> Script:
    """A judge that reads the rendered judge prompt and answers `<judge>True</judge>` on normalized exact match."""

    def script(request: ChatRequest) -> Reply:
        sections = extract_sections(request.prompt)
        correct = exact_match(sections["candidate"], sections["reference"]) == 1.0
        return Reply(content=f"<judge>{correct}</judge>", delay_s=latency_s)

    return script


@dataclass
class _ServerState:
    script: Script
    requests: list[ChatRequest] = field(default_factory=list)
    counter: itertools.count = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    """Bumped by set_script; in-flight counts cover the current script's requests only."""
    in_flight: int = 0
    max_in_flight: int = 0


class ScriptedLLMServer:
    def __init__(self, script: Script | Sequence[Reply] | Reply | None = None, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self._requested_port = port
        self._state = _ServerState(script=_as_script(script))
        self._server: ThreadedUvicorn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[ChatRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def max_in_flight(self) -> int:
        """Most requests the server held at once."""
        return self._state.max_in_flight

    def set_script(self, script: Script | Sequence[Reply] | Reply) -> None:
        """Replace the script, release hung requests, and restart the request log and in-flight counts."""
        with self._state.lock:
            self._state.script = _as_script(script)
            self._state.requests.clear()
            self._state.counter = itertools.count()
            self._state.generation += 1
            self._state.in_flight = 0
            self._state.max_in_flight = 0
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
            self._release = asyncio.Event()

    def start(self, timeout_s: float = 10.0) -> ScriptedLLMServer:
        self._server = ThreadedUvicorn(self._build_app(), host=self.host, port=self._requested_port)
        self.port = self._server.start(timeout_s)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        if self._loop is not None and self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        self._server.stop()
        self._server = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _build_app(self):
        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI):
            self._loop = asyncio.get_running_loop()
            self._release = asyncio.Event()
            yield

        api = FastAPI(title="scripted OpenAI-compatible server", lifespan=lifespan)

        @api.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{"id": "scripted", "object": "model", "owned_by": "tests"}]}

        async def app(scope, receive, send) -> None:
            if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" and scope["method"] == "POST":
                await self._chat_completions(receive, send)
            else:
                await api(scope, receive, send)

        return app

    async def _chat_completions(self, receive, send) -> None:
        state = self._state
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            body = json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError):
            await _send_json(send, 400, {"error": {"message": "body is not JSON"}})
            return
        if not isinstance(body, dict):
            await _send_json(send, 400, {"error": {"message": "body is not a JSON object"}})
            return
        with state.lock:
            chat = ChatRequest(index=next(state.counter), body=body)
            state.requests.append(chat)
            script, generation = state.script, state.generation
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await self._respond(send, script(chat), body)
        finally:
            with state.lock:
                if state.generation == generation:
                    state.in_flight -= 1

    async def _respond(self, send, reply: Reply, body: dict) -> None:
        if reply.hang:
            await self._release.wait()  # set by stop() or set_script()
            await _send_json(send, 503, {"error": {"message": "server stopping"}})
            return
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.raw_body is not None:
            await _send(send, reply.status, reply.raw_body.encode())
        elif reply.status != 200:
            await _send_json(send, reply.status, {"error": {"message": f"scripted status {reply.status}"}})
        else:
            await _send_json(send, 200, _completion(reply.content, body.get("model", "scripted")))


async def _send(send, status: int, payload: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _send_json(send, status: int, value) -> None:
    await _send(send, status, json.dumps(value).encode())


def _completion(content: str | None, model: str) -> dict:
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _as_script(script: Script | Sequence[Reply] | Reply | None) -> Script:
    if script is None:
        return exact_match_judge()
    if isinstance(script, Reply):
        return lambda request: script
    if callable(script):
        return script
    return replies_in_order(script)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible judge that grades by exact match.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before every reply")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = ScriptedLLMServer(exact_match_judge(args.latency_s), host=args.host, port=args.port).start()
    logger.info("scripted judge at %s (Ctrl-C to stop)", server.base_url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
