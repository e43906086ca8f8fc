"""Agent settings, read from the `unidoc_agent` section of the trainer config."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from unidoc_rl.common.settings_keys import reject_unknown_keys
from unidoc_rl.env.episode_state import EpisodeLimits
from unidoc_rl.env.prompts import DEFAULT_TEMPLATE, load_prompts
from unidoc_rl.env.vision import CoordinateConvention, PixelBudget


@dataclass(frozen=True)
class AgentSettings:
    search_url: str = ""
    """The search service's root `http://host:port` or its `/search` endpoint, or `inprocess://name` for a registered
    in-process backend."""
    search_top_k: int = 10
    search_timeout: float = 10.0
    search_retries: int = 3
    limits: EpisodeLimits = field(default_factory=EpisodeLimits)
    convention: CoordinateConvention = CoordinateConvention.ABSOLUTE
    min_pixels: int | None = None
    max_pixels: int | None = None
    """Display pixel budget; defaults to the processor's own, and must lie within it."""
    max_tokens_per_turn: int = 1024
    min_turn_tokens: int = 8
    """A turn is started only if at least this many tokens of context and response budget remain."""
    force_final_answer: bool = True
    """When a budget runs out, ask once more for an answer (the finish reason still names the budget)."""
    prompt_template: str = DEFAULT_TEMPLATE
    """The agent's texts (system prompt, question and observation turns): a template shipped in
    unidoc_rl/env/prompt_templates/ by name, or a .jinja file path (a released checkpoint's own wording)."""

    def __post_init__(self):
        load_prompts(self.prompt_template)  # a missing or malformed template fails here, naming the problem

    @classmethod
    def from_mapping(cls, raw: Any) -> AgentSettings:
        values = dict(raw or {})
        limit_names = {item.name for item in fields(EpisodeLimits)}
        reject_unknown_keys(values, {item.name for item in fields(cls)} | limit_names, "unidoc_agent")
        limits = EpisodeLimits(**{name: values.pop(name) for name in list(values) if name in limit_names})
        if "convention" in values:
            values["convention"] = CoordinateConvention(values["convention"])
        return cls(limits=limits, **values)

    def pixel_budget(self, processor_min: int, processor_max: int) -> PixelBudget:
        """The display budget; images at this budget pass through the processor unchanged."""
        budget = PixelBudget(self.min_pixels or processor_min, self.max_pixels or processor_max)
        if budget.min_pixels < processor_min or budget.max_pixels > processor_max:
            raise ValueError(
                f"display budget [{budget.min_pixels}, {budget.max_pixels}] must lie within the processor's "
                f"[{processor_min}, {processor_max}], or the processor would resize images again and boxes would "
                "no longer match what the model saw"
            )
        return budget
