"""Per-step training metrics from reward components and episode records (pure; the verl plugin logs them).

The verl plugin names them `{prefix}/reward/{component}` and `{prefix}/agent/{behaviour}` with the prefix `unidoc`;
runs of the retired local trainer used `train` and `val`, and the viewer groups either alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from numbers import Real

import numpy as np

from unidoc_rl.env.episode import EpisodeRecord


def mean(values: Iterable[float]) -> float:
    """The mean, 0.0 for no values."""
    values = [float(value) for value in values]
    return float(np.mean(values)) if values else 0.0


def reward_component_metrics(infos: Iterable[Mapping], prefix: str) -> dict[str, float]:
    """The mean of every numeric (or boolean) reward component (`{prefix}/reward/{name}`), over the trajectories
    that have it."""
    infos = list(infos)
    names = sorted({name for info in infos for name, value in info.items() if isinstance(value, Real)})
    return {
        f"{prefix}/reward/{name}": mean(info[name] for info in infos if isinstance(info.get(name), Real))
        for name in names
    }


def agent_metrics(episodes: list[EpisodeRecord], prefix: str) -> dict[str, float]:
    """Means over episodes: turns, invalid actions, and the shares that cropped, answered or answered when forced;
    searches per episode and failed searches per episode."""
    if not episodes:
        return {}
    return {
        f"{prefix}/agent/turns": mean(episode.num_turns for episode in episodes),
        f"{prefix}/agent/invalid_actions": mean(episode.invalid_actions for episode in episodes),
        f"{prefix}/agent/crop_rate": mean(episode.cropped for episode in episodes),
        f"{prefix}/agent/answered": mean(episode.answered for episode in episodes),
        f"{prefix}/agent/forced_answers": mean(episode.forced_answer for episode in episodes),
        f"{prefix}/agent/searches": mean(len(episode.searches) for episode in episodes),
        f"{prefix}/agent/search_failures": mean(episode.search_failures for episode in episodes),
    }
