"""verl's synchronous V1 trainer with the project's per-step metrics, selected by `trainer.v1.trainer_mode`.

`trainer.v1.trainer_mode=unidoc_sync` runs verl's `PPOTrainerSync` unchanged (the same replay buffer, DAPO group
filtering, weight sync) and adds, every training step, the reward components, the reward's spread within GRPO groups
and the agent metrics of the step's trajectories (unidoc_rl/verl_plugin/metrics.py) to what verl logs. With
`unidoc_trainer.trajectory_log` set, it also appends every trajectory's episode record and reward breakdown to that
JSONL file as episode log lines (`unidoc_rl.episode_log`), which the trajectory viewer reads (docs/viewer.md). verl
compares the mode name with its own in many places, so the trainer hands verl its own name ("sync") before verl
reads the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import transfer_queue as tq
from omegaconf import DictConfig, open_dict
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer

from unidoc_rl.episode import EpisodeRecord
from unidoc_rl.episode_log import EpisodeLogLine, breakdown_from_dict
from unidoc_rl.jsonl import JsonlLog
from unidoc_rl.verl_plugin.metrics import group_spread_metrics, prompt_uid, rollout_metrics

TRAINER_MODE = "unidoc_sync"
VERL_MODE = "sync"


@register_trainer(TRAINER_MODE)
class UniDocSyncTrainer(PPOTrainerSync):
    def __init__(self, config: DictConfig):
        with open_dict(config):
            config.trainer.v1.trainer_mode = VERL_MODE
        super().__init__(config)
        path = (config.get("unidoc_trainer") or {}).get("trajectory_log")
        self._trajectory_path = Path(path) if path else None
        self._trajectory_log: JsonlLog | None = None

    def step(self, metrics: dict, timing_raw: dict):
        batch = super().step(metrics, timing_raw)
        keys = [key for key, tag in zip(batch.keys, batch.tags, strict=True) if not tag.get("is_padding", False)]
        if keys:
            data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["uid", "extra_fields"])
            extra_fields = column_values(data["extra_fields"], len(keys))
            metrics.update(rollout_metrics(extra_fields))
            metrics.update(group_spread_metrics(keys, extra_fields))
            if self._trajectory_path is not None:
                self._log_trajectories(keys, extra_fields)
        return batch

    def _log_trajectories(self, keys: list[str], extra_fields: list) -> None:
        if self._trajectory_log is None:
            # A resumed run repeats no step: lines after the checkpoint it resumed from are dropped.
            self._trajectory_log = JsonlLog(self._trajectory_path)
            self._trajectory_log.truncate_after_step(self.global_steps - 1)
        self._trajectory_log.write_many(trajectory_lines(self.global_steps, keys, extra_fields))


def trajectory_lines(step: int, keys: list[str], extra_fields: list) -> list[dict]:
    """The episode log lines (`unidoc_rl.episode_log`) of a step's trajectories: step, GRPO group, episode record and
    reward breakdown; a trajectory without an episode record (another agent loop's) is left out."""
    lines = []
    for key, row in zip(keys, extra_fields, strict=True):
        if not isinstance(row, Mapping) or not isinstance(row.get("episode"), Mapping):
            continue
        episode = EpisodeRecord.from_dict(row["episode"])
        info = row.get("reward_extra_info")
        line = EpisodeLogLine(
            uid=episode.uid,
            episode=episode,
            reward=breakdown_from_dict(info) if info else None,
            step=step,
            group=prompt_uid(key),
        )
        lines.append(line.to_dict())
    return lines


def column_values(column, length: int) -> list:
    """A non-tensor TransferQueue column as plain Python values (a stack, or a list of wrapped values)."""
    values = column.tolist() if hasattr(column, "tolist") else [column[index] for index in range(length)]
    return [getattr(value, "data", value) for value in values]
