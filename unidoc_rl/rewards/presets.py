"""Reward presets as tables: one declaration per preset, from which everything else is derived.

A preset is rows of (component, function, weight, credited turns) plus two gates on the format component. From
that one declaration come:
- `RewardPreset.combine`: the trajectory's total (the GRPO reward);
- `formula_text`: the formula as docs/rewards.md writes it (tests/rewards/test_presets.py checks the docs hold it);
- the per-action credit (unidoc_rl/rewards/credit.py): which turns each component's normalized score goes to.
The reward components themselves are reported for every trajectory, whatever the preset (RewardBreakdown.metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from unidoc_rl.env.episode import ActionKind
from unidoc_rl.rewards.components import FormatRule

COMPONENTS = ("answer", "retrieval", "selection", "crop", "format")
"""Every reward component, in the order a total is summed (the order fixes the floating-point result)."""

ALL_TURNS = frozenset(ActionKind)
"""Credited turns of a component that judges the whole trajectory (every model turn, invalid ones included)."""

CREDITED_TURNS: dict[str, frozenset[ActionKind]] = {
    "answer": ALL_TURNS,  # the outcome: every model token
    "retrieval": frozenset({ActionKind.SEARCH}),
    "selection": frozenset({ActionKind.SELECT}),
    "crop": frozenset({ActionKind.BBOX}),
    "format": ALL_TURNS,
}
"""The turns whose action each component judges: where per-action credit puts its normalized score."""

FUNCTIONS = {
    "answer": "judge or answer_match.rule_based_score",
    "retrieval": "components.retrieval_score",
    "selection": "components.selection_score",
    "crop": "components.crop_score",
    "format": "components.format_score",
}
"""The function computing each component (unidoc_rl/rewards/), for the rendered table."""


@dataclass(frozen=True)
class Term:
    """One row of a preset: `weight · component`, the component computed by `function`."""

    component: str
    weight: float

    def __post_init__(self):
        if self.component not in COMPONENTS:
            raise ValueError(f"unknown reward weights [{self.component!r}]; known: {sorted(COMPONENTS)}")
        if self.weight < 0:
            raise ValueError(f"reward weight {self.component} must be >= 0, got {self.weight}")

    @property
    def function(self) -> str:
        return FUNCTIONS[self.component]

    @property
    def credited_turns(self) -> frozenset[ActionKind]:
        return CREDITED_TURNS[self.component]


@dataclass(frozen=True)
class RewardPreset:
    name: str
    format_rule: FormatRule
    terms: tuple[Term, ...]
    """The rows, one per weighted component, in COMPONENTS order; a component without a row has weight 0."""
    answer_gate: float
    """The answer is scored (the judge called) only when format >= answer_gate; otherwise answer = 0."""
    reward_gate: float
    """The total is 0 when format < reward_gate."""

    def __post_init__(self):
        names = [term.component for term in self.terms]
        if names != [name for name in COMPONENTS if name in names]:
            raise ValueError(f"preset {self.name}: rows must name distinct components in the order {COMPONENTS}")

    @property
    def weights(self) -> dict[str, float]:
        """Every component's weight (0 for those without a row)."""
        declared = {term.component: term.weight for term in self.terms}
        return {name: declared.get(name, 0.0) for name in COMPONENTS}

    def gated(self, format: float) -> bool:
        """The preset zeroes this trajectory's total."""
        return format < self.reward_gate

    def combine(self, format: float, retrieval: float, selection: float, crop: float, answer: float) -> float:
        if self.gated(format):
            return 0.0
        values = {"answer": answer, "retrieval": retrieval, "selection": selection, "crop": crop, "format": format}
        total = 0.0
        for term in self.terms:
            total += term.weight * values[term.component]
        return total

    def with_weights(self, overrides: Mapping[str, float] | None) -> RewardPreset:
        if not overrides:
            return self
        unknown = sorted(set(overrides) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown reward weights {unknown}; known: {sorted(COMPONENTS)}")
        weights = {**self.weights, **{name: float(value) for name, value in overrides.items()}}
        declared = {term.component for term in self.terms} | set(overrides)
        terms = tuple(Term(name, weights[name]) for name in COMPONENTS if name in declared)
        return replace(self, terms=terms)


PRESETS: dict[str, RewardPreset] = {
    "unidoc": RewardPreset(
        name="unidoc",
        format_rule=FormatRule.UNIDOC,
        terms=(
            Term("answer", 0.6),
            Term("retrieval", 0.1),
            Term("selection", 0.1),
            Term("crop", 0.1),
            Term("format", 0.1),
        ),
        answer_gate=1.0,
        reward_gate=0.5,
    ),
    "vrag": RewardPreset(
        name="vrag",
        format_rule=FormatRule.VRAG,
        terms=(Term("answer", 0.7), Term("retrieval", 0.2), Term("format", 0.1)),
        answer_gate=1.0,
        reward_gate=1.0,
    ),
}


def get_preset(name: str) -> RewardPreset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown reward preset {name!r}; choose one of {sorted(PRESETS)}") from None


# --- the formula as text --------------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:g}"


def weighted_sum_text(preset: RewardPreset) -> str:
    """`0.6·answer + 0.1·(retrieval + selection + crop + format)`: consecutive rows of equal weight share it."""
    parts: list[str] = []
    runs: list[tuple[float, list[str]]] = []
    for term in preset.terms:
        if term.weight == 0:
            continue
        if runs and runs[-1][0] == term.weight:
            runs[-1][1].append(term.component)
        else:
            runs.append((term.weight, [term.component]))
    for weight, names in runs:
        body = names[0] if len(names) == 1 else "(" + " + ".join(names) + ")"
        parts.append(body if weight == 1 else f"{_number(weight)}·{body}")
    return " + ".join(parts) if parts else "0"


def formula_text(preset: RewardPreset) -> str:
    """The preset's total as docs/rewards.md states it, rendered from the declaration."""
    return (
        f"total = {weighted_sum_text(preset)} when format ≥ {_number(preset.reward_gate)}, else 0; "
        f"answer = 0 (not scored, judge not called) unless format ≥ {_number(preset.answer_gate)}"
    )


def table_text(preset: RewardPreset) -> str:
    """The preset's rows as a Markdown table (component, function, weight, credited turns)."""
    lines = ["| component | function | weight | credited turns (per-action) |", "|---|---|---|---|"]
    for term in preset.terms:
        turns = "every model turn" if term.credited_turns == ALL_TURNS else ", ".join(sorted(term.credited_turns))
        lines.append(f"| {term.component} | `{term.function}` | {_number(term.weight)} | {turns} |")
    return "\n".join(lines)
