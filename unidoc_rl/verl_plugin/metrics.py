"""Per-step metrics of UniDoc trajectories for verl's logger: reward components and agent behaviour.

verl's V1 trainer logs the total score of every training step but not the reward manager's components, which reach
TransferQueue with each trajectory (`extra_fields["reward_extra_info"]`, beside the episode record in
`extra_fields["episode"]`). `rollout_metrics` turns a step's extra fields into the metrics a GRPO researcher reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Real

import numpy as np

from unidoc_rl.episode import EpisodeRecord
from unidoc_rl.rewards.groups import within_group_std

PREFIX = "unidoc"


def _mean(values: Iterable[float]) -> float:
    values = [float(value) for value in values]
    return float(np.mean(values)) if values else 0.0


def reward_component_metrics(infos: list[Mapping], prefix: str = PREFIX) -> dict[str, float]:
    """The mean of every numeric reward component (`{prefix}/reward/{name}`), over the trajectories that have it."""
    names = sorted({name for info in infos for name, value in info.items() if isinstance(value, Real)})
    return {
        f"{prefix}/reward/{name}": _mean(info[name] for info in infos if isinstance(info.get(name), Real))
        for name in names
    }


def agent_metrics(episodes: list[EpisodeRecord], prefix: str = PREFIX) -> dict[str, float]:
    """Means over episodes: turns, invalid actions, and the shares that cropped, answered or answered when forced;
    searches per episode and failed searches per episode."""
    if not episodes:
        return {}
    return {
        f"{prefix}/agent/turns": _mean(episode.num_turns for episode in episodes),
        f"{prefix}/agent/invalid_actions": _mean(episode.invalid_actions for episode in episodes),
        f"{prefix}/agent/crop_rate": _mean(bool(episode.crops) for episode in episodes),
        f"{prefix}/agent/answered": _mean(episode.answer is not None for episode in episodes),
        f"{prefix}/agent/forced_answers": _mean(episode.forced_answer for episode in episodes),
        f"{prefix}/agent/searches": _mean(len(episode.searches) for episode in episodes),
        f"{prefix}/agent/search_failures": _mean(episode.search_failures for episode in episodes),
    }


def rollout_metrics(extra_fields: Iterable[Mapping | None], prefix: str = PREFIX) -> dict[str, float]:
    """Reward components and agent metrics of one step's trajectories, from their `extra_fields`; trajectories of
    other agent loops (no episode record) count only towards the reward components they carry."""
    rows = [row for row in extra_fields if isinstance(row, Mapping)]
    infos = [row["reward_extra_info"] for row in rows if isinstance(row.get("reward_extra_info"), Mapping)]
    episodes = [EpisodeRecord.from_dict(row["episode"]) for row in rows if isinstance(row.get("episode"), Mapping)]
    return {**reward_component_metrics(infos, prefix), **agent_metrics(episodes, prefix)}


def prompt_uid(key: str) -> str:
    """The GRPO group of a trajectory: the prompt uid of verl's key `{prompt uid}_{session}_{index}`."""
    return str(key).split("_")[0]


def group_spread_metrics(keys: Iterable[str], extra_fields: Iterable[Mapping | None], prefix: str = PREFIX) -> dict:
    """`{prefix}/reward/std_within_groups`: the mean over the step's GRPO groups of the total reward's spread.
    Trajectory keys are verl's `{prompt uid}_{session}_{index}`; a group is one prompt uid, as in verl's replay
    buffer. Trajectories without a `score` component are left out."""
    scores, groups = [], []
    for key, row in zip(keys, extra_fields, strict=True):
        info = row.get("reward_extra_info") if isinstance(row, Mapping) else None
        if isinstance(info, Mapping) and isinstance(info.get("score"), Real):
            scores.append(float(info["score"]))
            groups.append(prompt_uid(key))
    return {f"{prefix}/reward/std_within_groups": within_group_std(scores, groups)} if scores else {}
