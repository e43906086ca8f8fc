"""Per-action credit: GRPO advantages where each reward component reaches only the turns whose action it judges.

The math, top to bottom (B trajectories, T response tokens; docs/rewards.md, "Credit assignment"):

1. The default estimator (verl's GRPO): one scalar per trajectory, its total reward normalized within its GRPO
   group, (r - mean) / (std + eps), on every model token.
2. Turn spans: each model turn's tokens are one contiguous run of response_mask == 1 (observations, and the
   `<|im_end|>` the agent loop appends after a stop string, are 0). Run k is the record's turn k; when the counts
   differ the trajectory is not mapped (it falls back to 1.).
3. Per component c, the trajectories that have a turn c judges (retrieval: a search turn, selection: a select turn,
   crop: a bbox turn, answer and format: any turn) are normalized within their group, as GDPO does:
   n_c = (x_c - mean) / (std + eps) when std > 0, else x_c - mean (that is, 0). A trajectory with no such turn is
   left out of c's statistics (it does not count as a 0).
4. A model token of a turn of kind k gets Σ over the components c that credit k of weight_c · n_c. Answer and format
   credit every turn, so the outcome term w_answer · n_answer is on every model token.
5. Gates hold: a trajectory the preset zeroes (format < reward_gate), or whose turns could not be mapped, gets the
   default advantage of 1. and does not enter any component's statistics.

Everything here is pure (tensors and lists in, tensors out); the verl registration is unidoc_rl/verl_plugin/credit.py.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import torch

from unidoc_rl.env.episode import ActionKind
from unidoc_rl.rewards.presets import COMPONENTS, CREDITED_TURNS

EPSILON = 1e-6
"""As verl's GRPO: added to the group std before dividing."""


# --- 1. the default estimator ---------------------------------------------------------------------------------


def _groups(index: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    members: dict[Hashable, list[int]] = {}
    for row, group in enumerate(index):
        members.setdefault(group, []).append(row)
    return members


def grpo_scalars(
    scores: torch.Tensor, index: Sequence[Hashable], epsilon: float = EPSILON, norm_by_std: bool = True
) -> torch.Tensor:
    """(B,) -> (B,): verl's GRPO outcome advantage per trajectory (a group of one: mean 0, std 1; std unbiased)."""
    scalars = torch.zeros_like(scores, dtype=torch.float32)
    for rows in _groups(index).values():
        values = scores[rows].float()
        mean, std = (values.mean(), values.std()) if len(rows) > 1 else (torch.tensor(0.0), torch.tensor(1.0))
        scalars[rows] = (values - mean) / (std + epsilon) if norm_by_std else values - mean
    return scalars


# --- 2. turn spans --------------------------------------------------------------------------------------------


def turn_spans(mask_row: torch.Tensor) -> list[tuple[int, int]]:
    """(T,) -> [(start, end)]: the runs of mask == 1, in order; each is one model turn."""
    spans: list[tuple[int, int]] = []
    start = None
    for position, value in enumerate(mask_row.tolist()):
        if value and start is None:
            start = position
        elif not value and start is not None:
            spans.append((start, position))
            start = None
    if start is not None:
        spans.append((start, len(mask_row)))
    return spans


def map_turns(
    response_mask: torch.Tensor, turn_kinds: Sequence[Sequence[ActionKind]]
) -> tuple[list[list[tuple[int, int]]], list[bool]]:
    """(B, T) mask, per trajectory its record's turn kinds -> per trajectory its model-turn spans, and whether they
    match its record's turns one to one (the trajectory is mapped)."""
    spans = [turn_spans(row) for row in response_mask]
    pairs = zip(spans, turn_kinds, strict=True)
    mapped = [bool(row_spans) and len(row_spans) == len(kinds) for row_spans, kinds in pairs]
    return spans, mapped


def mean_turn_advantages(
    advantages: torch.Tensor, spans: Sequence[Sequence[tuple[int, int]]], mapped: Sequence[bool]
) -> list[list[float] | None]:
    """(B, T) advantages of any estimator -> per mapped trajectory, the mean advantage of each turn's tokens (aligned
    with its record's turns); None for a trajectory that is not mapped."""
    return [
        [round(float(advantages[row, start:end].mean()), 6) for start, end in row_spans] if mapped[row] else None
        for row, row_spans in enumerate(spans)
    ]


# --- 3. per-component group normalization ---------------------------------------------------------------------


def judges(component: str, kinds: Sequence[ActionKind]) -> bool:
    """Whether the trajectory has a turn whose action the component judges."""
    return any(kind in CREDITED_TURNS[component] for kind in kinds)


def normalize_within_groups(
    values: torch.Tensor,
    included: torch.Tensor,
    index: Sequence[Hashable],
    epsilon: float = EPSILON,
    norm_by_std: bool = True,
) -> torch.Tensor:
    """(B,), (B,) bool -> (B,): values normalized over the included members of each group; 0 where not included.

    A group's statistics use only its included members: mean, and the unbiased std where it is non-zero (a single
    member has std 0, so it gets x - mean = 0)."""
    normalized = torch.zeros_like(values, dtype=torch.float32)
    for rows in _groups(index).values():
        rows = [row for row in rows if bool(included[row])]
        if not rows:
            continue
        group = values[rows].float()
        centred = group - group.mean()
        std = group.std() if len(rows) > 1 else torch.tensor(0.0)
        normalized[rows] = centred / (std + epsilon) if norm_by_std and std > 0 else centred
    return normalized


# --- 4. and 5. the token advantages ---------------------------------------------------------------------------


@dataclass
class CreditResult:
    advantages: torch.Tensor
    """(B, T): per-token advantages, 0 outside model tokens."""
    default: torch.Tensor
    """(B,): the default (GRPO) advantage of every trajectory, the trajectory-level reference."""
    per_action: list[bool]
    """Per trajectory: True when it got per-action credit, False when it got the default (gated or unmapped)."""
    mapped: list[bool]
    """Per trajectory: its runs of model tokens matched its record's turns one to one."""
    turn_advantages: list[list[float] | None]
    """Per trajectory, per record turn: the advantage of that turn's tokens (None when the turns were not mapped)."""
    spans: list[list[tuple[int, int]]]


def per_action_advantages(
    response_mask: torch.Tensor,
    index: Sequence[Hashable],
    totals: torch.Tensor,
    components: Mapping[str, torch.Tensor],
    turn_kinds: Sequence[Sequence[ActionKind]],
    gated: Sequence[bool],
    weights: Mapping[str, float],
    epsilon: float = EPSILON,
    norm_by_std: bool = True,
) -> CreditResult:
    """response_mask (B, T); totals (B,) the reward totals; components[c] (B,) for c in COMPONENTS; turn_kinds[i]
    the record's turn kinds of trajectory i; gated[i] True when the preset zeroes its total; weights[c] >= 0."""
    mask = response_mask.float()
    batch = mask.shape[0]
    default = grpo_scalars(totals, index, epsilon, norm_by_std)

    spans, mapped = map_turns(mask, turn_kinds)
    per_action = [mapped[row] and not gated[row] for row in range(batch)]

    normalized: dict[str, torch.Tensor] = {}
    for component in COMPONENTS:
        included = torch.tensor(
            [per_action[row] and judges(component, turn_kinds[row]) for row in range(batch)], dtype=torch.bool
        )
        normalized[component] = normalize_within_groups(components[component], included, index, epsilon, norm_by_std)

    advantages = default.unsqueeze(-1) * mask
    turn_advantages: list[list[float] | None] = []
    for row in range(batch):
        if not mapped[row]:
            turn_advantages.append(None)
            continue
        values = []
        for (start, end), kind in zip(spans[row], turn_kinds[row], strict=True):
            if per_action[row]:
                value = sum(
                    float(weights.get(c, 0.0)) * float(normalized[c][row])
                    for c in COMPONENTS
                    if kind in CREDITED_TURNS[c]
                )
                advantages[row, start:end] = value
            else:
                value = float(default[row])
            values.append(value)
        turn_advantages.append(values)
    return CreditResult(advantages * mask, default, per_action, mapped, turn_advantages, spans)


# --- what a researcher sees -----------------------------------------------------------------------------------


def credit_metrics(
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    default: torch.Tensor,
    spans: Sequence[Sequence[tuple[int, int]]],
    turn_kinds: Sequence[Sequence[ActionKind]],
    mapped: Sequence[bool],
    per_action: Sequence[bool] | None = None,
    prefix: str = "unidoc/credit",
) -> dict[str, float]:
    """Per step: `{prefix}/abs_advantage/{kind}` (mean |advantage| over the model tokens of turns of that kind, in
    mapped trajectories), `{prefix}/sign_flip_share` (share of model tokens whose advantage's sign differs from their
    trajectory's default advantage), `{prefix}/unmapped` (trajectories whose turns could not be mapped) and
    `{prefix}/per_action_share` (trajectories that got per-action credit)."""
    mask = response_mask.bool()
    metrics: dict[str, float] = {}
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row, row_spans in enumerate(spans):
        if not mapped[row]:
            continue
        for (start, end), kind in zip(row_spans, turn_kinds[row], strict=True):
            key = ActionKind(kind).value
            sums[key] = sums.get(key, 0.0) + float(advantages[row, start:end].abs().sum())
            counts[key] = counts.get(key, 0) + (end - start)
    for key in sorted(sums):
        metrics[f"{prefix}/abs_advantage/{key}"] = sums[key] / counts[key]
    tokens = int(mask.sum())
    if tokens:
        flipped = (torch.sign(advantages) != torch.sign(default).unsqueeze(-1)) & mask
        metrics[f"{prefix}/sign_flip_share"] = float(flipped.sum()) / tokens
    if len(mapped):
        metrics[f"{prefix}/unmapped"] = float(sum(not value for value in mapped))
        if per_action is not None:
            metrics[f"{prefix}/per_action_share"] = sum(per_action) / len(per_action)
    return metrics
