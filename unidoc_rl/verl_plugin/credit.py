"""Per-action credit as a verl advantage estimator: `algorithm.adv_estimator=unidoc_per_action`.

Registered with verl's `register_adv_est`. verl's `compute_advantage` (ray_trainer.py) calls a registered estimator
with `token_level_rewards`, `response_mask`, `config` (the `algorithm` block) and `index` (the GRPO group uids) only;
the batch itself (`non_tensor_batch`, `batch`) is passed to GDPO alone, by name, and the V1 trainer's
`_compute_advantage` fetches only `uid, response_mask, rm_scores, ...` from TransferQueue, so no estimator sees the
reward components there. The project's trainer (`trainer.v1.trainer_mode=unidoc_sync`, trainer.py) therefore
computes this estimator's advantages itself: it fetches the same fields plus `extra_fields` (the reward manager's
`reward_extra_info` and the agent loop's `episode` record, verl's own columns) and calls the registered function
with `non_tensor_batch` and `batch`, as verl calls GDPO. Selected under any other trainer, the estimator raises.

The pure math is unidoc_rl/rewards/credit.py; this module reads verl's batch columns into it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from unidoc_rl.env.episode import ActionKind
from unidoc_rl.rewards.credit import EPSILON, grpo_scalars, per_action_advantages
from unidoc_rl.rewards.presets import COMPONENTS, RewardPreset
from unidoc_rl.rewards.settings import RewardSettings

ESTIMATOR = "unidoc_per_action"
EXTRA_FIELDS = "extra_fields"
"""The non-tensor column holding each trajectory's extra fields (`reward_extra_info`, `episode`)."""


@dataclass
class CreditInputs:
    components: dict[str, torch.Tensor]
    """Per component, (B,): the reward manager's component scores (0 where a trajectory has none)."""
    turn_kinds: list[list[ActionKind]]
    """Per trajectory, the kinds of its record's turns ([] without a record: never mapped)."""
    gated: list[bool]
    """Per trajectory: the preset zeroes its total (format < reward_gate), or it carries no components."""


def credit_inputs(extra_fields: Sequence[Mapping | None], preset: RewardPreset) -> CreditInputs:
    """verl's `extra_fields` column (one dict per trajectory) -> the inputs of per-action credit."""
    rows = [getattr(row, "data", row) for row in extra_fields]
    infos = [row.get("reward_extra_info") if isinstance(row, Mapping) else None for row in rows]
    components = {
        name: torch.tensor(
            [float(info.get(name, 0.0)) if isinstance(info, Mapping) else 0.0 for info in infos], dtype=torch.float32
        )
        for name in COMPONENTS
    }
    turn_kinds = [turn_kinds_of(row) for row in rows]
    gated = [not isinstance(info, Mapping) or preset.gated(float(info.get("format", 0.0))) for info in infos]
    return CreditInputs(components, turn_kinds, gated)


def turn_kinds_of(row) -> list[ActionKind]:
    episode = row.get("episode") if isinstance(row, Mapping) else None
    if not isinstance(episode, Mapping):
        return []
    return [ActionKind(turn["action"]) for turn in episode.get("turns", [])]


def preset_from(config) -> RewardPreset:
    """The reward preset of the run (`reward.reward_kwargs`), with `unidoc_trainer.credit_weights` overriding its
    weights for the advantage only (the reward itself keeps the preset's)."""
    reward = config.get("reward") or {}
    preset = RewardSettings.from_mapping(reward.get("reward_kwargs")).resolved_preset()
    overrides = (config.get("unidoc_trainer") or {}).get("credit_weights")
    return preset.with_weights(dict(overrides) if overrides else None)


@register_adv_est(ESTIMATOR)
def compute_per_action_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    epsilon: float = EPSILON,
    norm_adv_by_std_in_grpo: bool = True,
    config=None,
    non_tensor_batch: Mapping | None = None,
    batch=None,
    preset: RewardPreset | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) rewards and mask, (B,) group ids; `non_tensor_batch[EXTRA_FIELDS]` per trajectory -> (B, T) advantages
    (and returns, the same). `preset` defaults to the unidoc preset."""
    if non_tensor_batch is None or EXTRA_FIELDS not in non_tensor_batch:
        raise ValueError(
            f"adv_estimator={ESTIMATOR} needs the trajectories' extra fields, which verl passes to no estimator but "
            "GDPO: train with trainer.v1.trainer_mode=unidoc_sync (configs/experiment/per_action_credit.yaml)"
        )
    preset = preset or RewardSettings().resolved_preset()
    inputs = credit_inputs(list(non_tensor_batch[EXTRA_FIELDS]), preset)
    result = per_action_advantages(
        response_mask,
        list(index),
        token_level_rewards.sum(dim=-1),
        inputs.components,
        inputs.turn_kinds,
        inputs.gated,
        preset.weights,
        epsilon,
        norm_adv_by_std_in_grpo,
    )
    advantages = result.advantages.to(token_level_rewards.dtype)
    return advantages, advantages


__all__ = ["ESTIMATOR", "compute_per_action_advantage", "credit_inputs", "grpo_scalars", "preset_from"]
