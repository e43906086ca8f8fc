"""Engines behind the `unidoc_local` rollout, chosen by `actor_rollout_ref.rollout.custom.engine`.

- `local` (default): the project's `LocalEngine`, transformers generation from the policy being trained.
- `scripted_opening`: the same engine, except that the first turn of every episode is the fixed text
  `rollout.custom.opening_turn` (e.g. a search). For smoke runs of the trainer with an untrained policy: every
  trajectory then carries page images, so the whole multimodal path (observations, pixel inputs, M-RoPE positions,
  log-probs over images) is exercised from the first step. Opening tokens are trained on like the policy's own.
"""

from __future__ import annotations

from typing import Any

from verl.workers.rollout.replica import TokenOutput

from unidoc_rl.engine.local_engine import LocalEngine

ASSISTANT_TURN = "<|im_start|>assistant"


class ScriptedOpeningEngine:
    """`LocalEngine` whose every episode opens with a fixed assistant turn (the first turn has one assistant header)."""

    def __init__(self, engine: LocalEngine, opening_turn: str):
        if not opening_turn:
            raise ValueError("rollout.custom.opening_turn is empty; the scripted_opening engine needs the turn's text")
        self.engine = engine
        self.opening_ids = engine.tokenizer.encode(opening_turn, add_special_tokens=False)

    @property
    def model(self):
        """The policy whose weights the trainer syncs."""
        return self.engine.model

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs) -> TokenOutput:
        prompt = self.engine.tokenizer.decode(prompt_ids)
        if prompt.count(ASSISTANT_TURN) > 1:
            return await self.engine.generate(
                request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, image_data=image_data, **kwargs
            )
        if sampling_params.get("logprobs"):
            raise ValueError(
                "the scripted opening turn has no sampling log-probs; set rollout.calculate_log_probs=false"
            )
        return TokenOutput(token_ids=list(self.opening_ids), log_probs=None, stop_reason="completed")


def build_engine(model_path: str, max_model_len: int, max_batch_size: int, seed: int, custom: dict[str, Any]):
    engine = LocalEngine.from_pretrained(
        model_path, max_model_len=max_model_len, max_batch_size=max_batch_size, seed=seed, batch_wait_s=0.05
    )
    kind = custom.get("engine", "local")
    if kind == "local":
        return engine
    if kind == "scripted_opening":
        return ScriptedOpeningEngine(engine, str(custom.get("opening_turn") or ""))
    raise ValueError(f"unknown rollout.custom.engine {kind!r}; expected 'local' or 'scripted_opening'")
