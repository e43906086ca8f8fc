"""The GRPO math of a training step is verl's: the advantages its V1 trainer computes for the project's config, on a
batch shaped as the project's agent loop and reward manager leave it, equal a hand-computed tensor. Also the two
pieces of the project's own that a step's logs rely on: the run log's resume truncation and the reward spread."""

import math

import numpy as np
import pytest
import torch
from verl.protocol import DataProto
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

from unidoc_rl.common.jsonl import JsonlLog, read_jsonl
from unidoc_rl.config import compose_config
from unidoc_rl.rewards.groups import within_group_std


def v1_trainer_advantages(config, keys: list[str], scores: list[float], response_mask: torch.Tensor) -> torch.Tensor:
    """Advantages as verl's V1 trainer computes them (`PPOTrainerBase._compute_advantage`, no KL in the reward): one
    row per trajectory key `{uid}_{session}_{output}`, each trajectory's reward on its last response token (verl's
    agent loop writes `rm_scores` so), 0 on observation tokens of the response mask."""
    last = response_mask.shape[1] - 1 - response_mask.flip(-1).argmax(-1)  # an episode ends on a policy turn
    rm_scores = torch.zeros(response_mask.shape, dtype=torch.float32)
    rm_scores[torch.arange(len(keys)), last] = torch.tensor(scores)
    data = DataProto.from_single_dict({"response_mask": response_mask, "token_level_rewards": rm_scores})
    data.non_tensor_batch["uid"] = np.array([key.rsplit("_", 2)[0] for key in keys], dtype=object)
    algorithm = config.algorithm
    assert not algorithm.use_kl_in_reward
    data = compute_advantage_for_multi_trajectories(
        data,
        batch_keys=keys,
        adv_estimator=algorithm.adv_estimator,
        gamma=algorithm.gamma,
        lam=algorithm.lam,
        num_repeat=config.actor_rollout_ref.rollout.n,
        norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo", True),
        config=algorithm,
    )
    return data.batch["advantages"]


@pytest.mark.parametrize("experiment", [None, "cpu", "dapo"])
def test_verl_grpo_advantages_are_group_normalized_and_zero_on_observations(experiment):
    config = compose_config(["actor_rollout_ref.rollout.n=2"], experiment)
    assert config.algorithm.adv_estimator == "grpo" and config.algorithm.norm_adv_by_std_in_grpo
    # Group a: two trajectories; b and c: one each (what a dropped or filtered rollout leaves).
    keys = ["a_0_0", "a_1_0", "b_0_0", "c_0_0"]
    mask = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 1, 0]])
    advantages = v1_trainer_advantages(config, keys, [1.0, 0.0, 0.7, 0.4], mask)
    spread = 0.5 / (math.sqrt(0.5) + 1e-6)  # group a: mean 0.5, unbiased std sqrt(0.5)
    expected = torch.tensor(
        [[spread, 0, spread, 0], [-spread] * 4, [0.7, 0.7, 0, 0], [0, 0.4, 0.4, 0]]  # singletons: mean 0, std 1
    )
    torch.testing.assert_close(advantages, expected, atol=1e-5, rtol=0)


def test_without_std_normalization_the_advantage_is_the_reward_less_the_group_mean():
    config = compose_config(["actor_rollout_ref.rollout.n=3", "algorithm.norm_adv_by_std_in_grpo=false"])
    mask = torch.ones(3, 2, dtype=torch.long)
    advantages = v1_trainer_advantages(config, ["g_0_0", "g_1_0", "g_2_0"], [0.9, 0.3, 0.0], mask)
    torch.testing.assert_close(advantages, torch.tensor([[0.5] * 2, [-0.1] * 2, [-0.4] * 2]), atol=1e-6, rtol=0)


def test_run_log_drops_a_partial_line_and_redone_steps(tmp_path):
    path = tmp_path / "log.jsonl"
    log = JsonlLog(path)
    for step in (1, 2, 3):
        log.write({"step": step, "reward": step / 10})
    log.close()
    with open(path, "a") as handle:
        handle.write('{"step": 4, "rew')  # a crash mid-write
    log = JsonlLog(path)
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]
    log.truncate_after_step(2)
    log.write({"step": 3, "reward": 0.9})
    log.close()
    assert read_jsonl(path) == [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.2}, {"step": 3, "reward": 0.9}]


def test_within_group_std_is_zero_only_without_a_learning_signal():
    groups = np.array(["1-0", "1-0", "1-1", "1-1"], dtype=object)
    assert within_group_std([1.0, 0.0, 0.5, 0.5], groups) == pytest.approx(0.25)
    assert within_group_std([0.3, 0.3, 0.0, 0.0], groups) == 0.0
