"""Reward presets: how the components combine into one scalar, and when the answer is judged at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from unidoc_rl.rewards.components import FormatRule


@dataclass(frozen=True)
class RewardWeights:
    answer: float = 0.0
    retrieval: float = 0.0
    selection: float = 0.0
    crop: float = 0.0
    format: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"reward weight {f.name} must be >= 0, got {getattr(self, f.name)}")


@dataclass(frozen=True)
class RewardPreset:
    name: str
    format_rule: FormatRule
    weights: RewardWeights
    answer_gate: float
    """The answer is scored (the judge called) only when format >= answer_gate; otherwise answer = 0."""
    reward_gate: float
    """The total is 0 when format < reward_gate."""

    def combine(self, format: float, retrieval: float, selection: float, crop: float, answer: float) -> float:
        if format < self.reward_gate:
            return 0.0
        w = self.weights
        return w.answer * answer + w.retrieval * retrieval + w.selection * selection + w.crop * crop + w.format * format

    def with_weights(self, overrides: Mapping[str, float] | None) -> RewardPreset:
        if not overrides:
            return self
        known = {f.name for f in fields(RewardWeights)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown reward weights {unknown}; known: {sorted(known)}")
        return replace(self, weights=replace(self.weights, **{k: float(v) for k, v in overrides.items()}))


PRESETS: dict[str, RewardPreset] = {
    # 0.6*answer + 0.1*(retrieval + selection + crop + format) when format = 1; the same without the answer
    # (judge not called) when format = 0.5; 0 otherwise.
    "unidoc": RewardPreset(
        name="unidoc",
        format_rule=FormatRule.UNIDOC,
        weights=RewardWeights(answer=0.6, retrieval=0.1, selection=0.1, crop=0.1, format=0.1),
        answer_gate=1.0,
        reward_gate=0.5,
    ),
    # 0.7*answer + 0.1*format + 0.2*retrieval when format > 0 (format is 0 or 1 under this rule).
    "vrag": RewardPreset(
        name="vrag",
        format_rule=FormatRule.VRAG,
        weights=RewardWeights(answer=0.7, retrieval=0.2, format=0.1),
        answer_gate=1.0,
        reward_gate=1.0,
    ),
}


def get_preset(name: str) -> RewardPreset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown reward preset {name!r}; choose one of {sorted(PRESETS)}") from None
