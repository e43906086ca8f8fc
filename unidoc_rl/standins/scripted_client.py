"""An LLM client that replies from a script, for tests, benchmarks and debugging the agent loop.

It implements verl's `LLMServerClient.generate` seam like a real engine (token ids in, token ids and log-probs
out, stop strings honoured) and records every call, so tests can check what the engine was given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput


@dataclass
class ScriptedCall:
    request_id: str
    turn: int
    """0-based index of this call within its request (trajectory)."""
    prompt_ids: list[int]
    images: list[Any]
    sampling_params: dict[str, Any]
    reply_ids: list[int] = field(default_factory=list)


Script = list[str] | Callable[[ScriptedCall], str]


class ScriptedLLMClient(LLMServerClient):
    """Replies with the script's next text per request id; log-prob of every token is `logprob`."""

    def __init__(self, tokenizer, script: Script, logprob: float = -0.25, record_prompts: bool = True):
        super().__init__(config=None)
        self.tokenizer = tokenizer
        self.script = script
        self.logprob = logprob
        self.record_prompts = record_prompts
        self.calls: list[ScriptedCall] = []
        self._turns: dict[str, int] = {}

    def _reply_text(self, call: ScriptedCall) -> str:
        if callable(self.script):
            return self.script(call)
        if call.turn >= len(self.script):
            raise RuntimeError(f"script has {len(self.script)} replies; turn {call.turn} requested")
        return self.script[call.turn]

    async def generate(
        self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None, **kwargs
    ) -> TokenOutput:
        turn = self._turns.get(request_id, 0)
        self._turns[request_id] = turn + 1
        call = ScriptedCall(
            request_id=request_id,
            turn=turn,
            prompt_ids=list(prompt_ids) if self.record_prompts else [],
            images=list(image_data or []),
            sampling_params=dict(sampling_params),
        )
        text = self._reply_text(call)
        for stop in sampling_params.get("stop") or []:
            position = text.find(stop)
            if position >= 0:
                text = text[: position + len(stop)]
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        max_tokens = sampling_params.get("max_tokens")
        if max_tokens is not None:
            ids = ids[:max_tokens]
        call.reply_ids = ids
        self.calls.append(call)
        return TokenOutput(token_ids=ids, log_probs=[self.logprob] * len(ids), stop_reason="completed")
