"""Judge client settings (the `judge` block of configs/reward/*.yaml)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum

from unidoc_rl.common.settings_keys import reject_unknown_keys
from unidoc_rl.rewards.answer_match import RuleScorer


class JudgeBackend(StrEnum):
    OPENAI = "openai"
    """Any OpenAI-compatible chat endpoint (vLLM, SGLang, a hosted API); `base_url` ends in /v1."""
    EVALUATOR_SERVICE = "evaluator_service"
    """The project's judge service (`python -m unidoc_rl.judge.evaluator_api`); `base_url` is its root or its `/eval`
    endpoint (the reference's RM_URL)."""


@dataclass(frozen=True)
class JudgeSettings:
    backend: JudgeBackend = JudgeBackend.OPENAI
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "judge"
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the API key of the endpoint at `base_url`; local servers accept any
    key. The judge service backend sends it in the X-API-Key header when the variable is set."""
    prompt_template: str = "judge_v1"
    max_concurrency: int = 128
    """Judge requests in flight per reward worker; at least one GRPO step's trajectories (16 prompts x 5) so a
    finished batch is judged in one round trip."""
    send_wave_size: int = 16
    """New requests started per event-loop turn: a burst is sent in waves, so the first requests reach the judge
    while the client still builds the rest and the judge's own request handling overlaps the client's."""
    service_batch_size: int = 128
    """evaluator_service backend: most prompts coalesced into one `POST /eval`."""
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    temperature: float = 0.0
    max_tokens: int = 32
    cache_size: int = 100_000
    fallback_scorer: RuleScorer = RuleScorer.ANLS

    def __post_init__(self):
        object.__setattr__(self, "backend", JudgeBackend(self.backend))
        object.__setattr__(self, "fallback_scorer", RuleScorer(self.fallback_scorer))
        positive = {
            "max_concurrency": self.max_concurrency,
            "send_wave_size": self.send_wave_size,
            "service_batch_size": self.service_batch_size,
            "timeout_s": self.timeout_s,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"judge.{name} must be > 0, got {value}")
        for name in ("max_retries", "backoff_initial_s", "backoff_max_s", "cache_size", "temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"judge.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_tokens <= 0:
            raise ValueError(f"judge.max_tokens must be > 0, got {self.max_tokens}")

    @property
    def api_key(self) -> str:
        return os.environ.get(self.api_key_env, "EMPTY")

    @classmethod
    def from_mapping(cls, values: Mapping | None) -> JudgeSettings:
        values = dict(values or {})
        reject_unknown_keys(values, (f.name for f in fields(cls)), "judge")
        return cls(**values)
