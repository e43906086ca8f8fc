"""Reward spread within GRPO groups: the learning signal a step carries (pure; shared by both trainers)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def within_group_std(scores: Sequence[float], groups: Sequence[Hashable]) -> float:
    """Mean over GRPO groups (trajectories of the same prompt) of the rewards' population standard deviation.
    0 means no group carries a learning signal: every advantage, and so the policy loss, is zero."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(groups):
        raise ValueError(f"{len(scores)} scores but {len(groups)} group ids")
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    spreads = [float(scores[indices].std()) for indices in members.values()]
    return float(np.mean(spreads)) if spreads else 0.0
