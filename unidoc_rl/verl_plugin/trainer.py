"""verl's synchronous V1 trainer with the project's per-step metrics, selected by `trainer.v1.trainer_mode`.

`trainer.v1.trainer_mode=unidoc_sync` runs verl's `PPOTrainerSync` unchanged (the same replay buffer, DAPO group
filtering, weight sync) and adds, every training step, the reward components, the reward's spread within GRPO groups
and the agent metrics of the step's trajectories (unidoc_rl/verl_plugin/metrics.py) to what verl logs. With
`unidoc_trainer.trajectory_log` set, it also appends every trajectory's episode record and reward breakdown to that
JSONL file as episode log lines (`unidoc_rl.episode_log`), which the trajectory viewer reads (docs/viewer.md), each
with `turn_advantages` (the mean advantage of each model turn's tokens, aligned with the record's turns). verl
compares the mode name with its own in many places, so the trainer hands verl its own name ("sync") before verl
reads the config.

Advantages: under any estimator the step also logs the credit metrics (`unidoc/credit/*`, rewards/credit.py). Under
`algorithm.adv_estimator=unidoc_per_action` the trainer computes the advantages itself, as verl's `_compute_advantage`
does (same fields, KL-in-reward and rollout correction, written back to TransferQueue the same way) plus the
trajectories' `extra_fields`, which verl hands to no registered estimator but GDPO (verl_plugin/credit.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import transfer_queue as tq
from omegaconf import DictConfig, open_dict
from tensordict import TensorDict
from verl.protocol import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.workers.utils.padding import response_to_nested

from unidoc_rl.common.jsonl import JsonlLog
from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.episode_log import EpisodeLogLine, breakdown_from_dict
from unidoc_rl.rewards.credit import credit_metrics, grpo_scalars, map_turns, mean_turn_advantages
from unidoc_rl.verl_plugin import credit
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
        self._turn_advantages: dict[str, list[float] | None] = {}
        per_action = config.algorithm.adv_estimator == credit.ESTIMATOR
        self._credit_preset = credit.preset_from(config) if per_action else None

    # --- advantages -------------------------------------------------------------------------------------------

    def _compute_advantage(self, batch, metrics: dict):
        extra_fields = self._extra_fields(batch)
        if self.config.algorithm.adv_estimator == credit.ESTIMATOR:
            batch = self._compute_per_action_advantage(batch, metrics, extra_fields)
        else:
            batch = super()._compute_advantage(batch, metrics)
        self._report_credit(batch, metrics, extra_fields)
        return batch

    def _compute_per_action_advantage(self, batch, metrics: dict, extra_fields: np.ndarray):
        """verl's `_compute_advantage` (v1/trainer_base.py) with the trajectories' extra fields in the batch."""
        algorithm = self.config.algorithm
        fields = ["uid", "response_mask", "rm_scores", "rollout_log_probs", "old_log_probs", "ref_log_prob", "values"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        response_mask = data["response_mask"]
        data = DataProto(batch=data.to_padded_tensor())
        data.batch["token_level_scores"] = data.batch["rm_scores"]
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)
        data.non_tensor_batch[credit.EXTRA_FIELDS] = extra_fields
        if algorithm.use_kl_in_reward:
            data, kl_metrics = apply_kl_penalty(data, kl_ctrl=self.kl_ctrl_in_reward, kl_penalty=algorithm.kl_penalty)
            metrics.update(kl_metrics)
        else:
            data.batch["token_level_rewards"] = data.batch["token_level_scores"]
        rollout_corr_config = algorithm.get("rollout_correction", None)
        bypass = rollout_corr_config and rollout_corr_config.get("bypass_mode", False)
        rollout_correction = rollout_corr_config is not None and "rollout_log_probs" in data.batch and not bypass
        if rollout_correction:
            data, is_metrics = compute_rollout_correction_and_add_to_batch(data, rollout_corr_config)
            metrics.update(is_metrics)

        estimator = core_algos.get_adv_estimator_fn(credit.ESTIMATOR)
        advantages, returns = estimator(
            token_level_rewards=data.batch["token_level_rewards"],
            response_mask=data.batch["response_mask"],
            index=data.non_tensor_batch["uid"],
            norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo", True),
            config=algorithm,
            non_tensor_batch=data.non_tensor_batch,
            batch=data.batch,
            preset=self._credit_preset,
        )
        data.batch["advantages"], data.batch["returns"] = advantages, returns

        names = ["advantages", "returns"]
        if algorithm.use_kl_in_reward:
            names.append("token_level_rewards")
        if rollout_correction:
            names.append("response_mask")
            if "rollout_is_weights" in data.batch:
                names.append("rollout_is_weights")
        output = TensorDict({name: response_to_nested(data.batch[name], response_mask) for name in names}, len(batch))
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)

    def _extra_fields(self, batch) -> np.ndarray:
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
        column = np.empty(len(batch.keys), dtype=object)
        column[:] = column_values(data["extra_fields"], len(batch.keys))
        return column

    def _report_credit(self, batch, metrics: dict, extra_fields: np.ndarray) -> None:
        """The credit metrics of the step's advantages (any estimator) and each turn's advantage for the log."""
        fields = ["uid", "response_mask", "rm_scores", "advantages"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        padded = data.to_padded_tensor()
        # Rows added to make the batch divisible (tagged is_padding) are left out, as step() leaves them out.
        real = [row for row, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        mask, advantages = padded["response_mask"][real], padded["advantages"][real]
        uids = list(padded["uid"].tolist()) if hasattr(padded["uid"], "tolist") else list(padded["uid"])
        kinds = [credit.turn_kinds_of(extra_fields[row]) for row in real]
        default = grpo_scalars(padded["rm_scores"][real].sum(-1), [uids[row] for row in real])
        spans, mapped = map_turns(mask, kinds)
        metrics.update(credit_metrics(advantages, mask, default, spans, kinds, mapped))
        keys = [batch.keys[row] for row in real]
        self._turn_advantages = dict(zip(keys, mean_turn_advantages(advantages, spans, mapped), strict=True))

    # --- per-step metrics and the trajectory log --------------------------------------------------------------

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
        lines = trajectory_lines(self.global_steps, keys, extra_fields, self._turn_advantages)
        self._trajectory_log.write_many(lines)


def trajectory_lines(
    step: int, keys: list[str], extra_fields: list, turn_advantages: Mapping[str, list | None] | None = None
) -> list[dict]:
    """The episode log lines (`unidoc_rl.episode_log`) of a step's trajectories: step, GRPO group, episode record,
    reward breakdown and, when known, `turn_advantages` (per record turn, the mean advantage of its tokens); a
    trajectory without an episode record (another agent loop's) is left out."""
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
            turn_advantages=(turn_advantages or {}).get(key),
        )
        lines.append(line.to_dict())
    return lines


def column_values(column, length: int) -> list:
    """A non-tensor TransferQueue column as plain Python values (a stack, or a list of wrapped values)."""
    values = column.tolist() if hasattr(column, "tolist") else [column[index] for index in range(length)]
    return [getattr(value, "data", value) for value in values]
