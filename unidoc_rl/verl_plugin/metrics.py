"""Per-step metrics of UniDoc trajectories for verl's logger: reward components and agent behaviour.

verl's V1 trainer logs the total score of every training step but not the reward manager's components, which reach
TransferQueue with each trajectory (`extra_fields["reward_extra_info"]`, beside the episode record in
`extra_fields["episode"]`). `rollout_metrics` turns a step's extra fields into the metrics a GRPO researcher reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Real

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.rewards.groups import within_group_std
from unidoc_rl.training.step_metrics import agent_metrics, reward_component_metrics

PREFIX = "unidoc"


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
