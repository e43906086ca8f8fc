import math

import numpy as np
import pytest
import torch
from verl.utils.config import omega_conf_to_dataclass

from unidoc_rl.jsonl import JsonlLog, read_jsonl
from unidoc_rl.rewards.groups import within_group_std
from unidoc_rl.trainer.grpo import grpo_advantages, policy_objective, token_level_rewards
from unidoc_rl.trainer.local import compose_config


@pytest.fixture(scope="module")
def actor_config():
    config = compose_config(["actor_rollout_ref.actor.kl_loss_type=low_var_kl"])
    return omega_conf_to_dataclass(config.actor_rollout_ref.actor)


def test_outcome_reward_sits_on_the_last_response_token():
    attention = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    rewards = token_level_rewards(torch.tensor([0.6, 1.0, 0.3]), attention)
    torch.testing.assert_close(rewards, torch.tensor([[0, 0, 0.6, 0], [1.0, 0, 0, 0], [0, 0, 0, 0]]))


def test_grpo_advantages_are_group_normalized_and_zero_on_observations():
    attention = torch.ones(4, 3, dtype=torch.long)
    mask = torch.tensor([[1, 0, 1], [1, 1, 1], [1, 1, 0], [0, 1, 1]])
    groups = np.array(["a", "a", "b", "c"], dtype=object)
    advantages = grpo_advantages(torch.tensor([1.0, 0.0, 0.7, 0.4]), attention, mask, groups)
    spread = 0.5 / (math.sqrt(0.5) + 1e-6)  # group a: mean 0.5, unbiased std sqrt(0.5)
    expected = [[spread, 0, spread], [-spread] * 3, [0.7, 0.7, 0], [0, 0.4, 0.4]]  # singleton groups: mean 0, std 1
    assert advantages.tolist() == [pytest.approx(row, abs=1e-5) for row in expected]


def test_on_policy_objective_matches_the_hand_computed_loss(actor_config):
    log_prob = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -4.0]], requires_grad=True)
    ref = torch.tensor([[-1.2, -2.0, -0.1], [-0.3, -1.0, -4.0]])
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    terms = policy_objective(
        log_prob, log_prob.detach(), ref, advantages, mask, actor_config, batch_num_tokens=5, global_batch_size=2
    )
    pg = -(1 + 1 - 0.5 - 0.5 - 0.5) / 5
    delta = ref - log_prob.detach()
    low_var_kl = (delta.exp() - delta - 1).clamp(-10, 10)
    kl = float((low_var_kl * mask).sum() / 5)
    assert terms.pg_loss == pytest.approx(pg, abs=1e-6)
    assert terms.kl_loss == pytest.approx(kl, abs=1e-6)
    assert float(terms.loss.detach()) == pytest.approx(pg + 0.01 * kl, abs=1e-6)
    assert terms.pg_clipfrac == 0.0 and terms.ppo_kl == pytest.approx(0.0)
    terms.loss.backward()
    # d(pg)/d(logp) = -A/N on unmasked tokens (ratio 1); the KL term adds 0.01 * (1 - exp(delta)) / N.
    expected_grad = (-advantages / 5 + 0.01 * (1 - delta.exp()) / 5) * mask
    torch.testing.assert_close(log_prob.grad, expected_grad, atol=1e-6, rtol=1e-5)


def test_micro_batch_losses_sum_to_the_mini_batch_loss(actor_config):
    torch.manual_seed(0)
    log_prob = -torch.rand(6, 5)
    ref = -torch.rand(6, 5)
    advantages = torch.randn(6, 1).expand(6, 5)
    mask = (torch.rand(6, 5) > 0.3).long()
    tokens = int(mask.sum())
    whole = policy_objective(log_prob, log_prob, ref, advantages, mask, actor_config, tokens, 6)
    parts = [
        policy_objective(log_prob[r], log_prob[r], ref[r], advantages[r], mask[r], actor_config, tokens, 6)
        for r in (slice(0, 2), slice(2, 5), slice(5, 6))
    ]
    assert sum(float(p.loss) for p in parts) == pytest.approx(float(whole.loss), abs=1e-6)


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


def test_policy_inputs_trim_shared_padding_and_need_no_images():
    from verl.protocol import DataProto

    from unidoc_rl.trainer.grpo import policy_inputs

    prompts = torch.tensor([[0, 0, 5, 6], [0, 7, 8, 9]])  # left-padded to 4
    responses = torch.tensor([[11, 12, 0], [13, 0, 0]])  # right-padded to 3
    attention = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0]])
    input_ids = torch.cat([prompts, responses], dim=1)
    positions = torch.arange(7).expand(2, 4, 7)
    batch = DataProto.from_single_dict(
        {"prompts": prompts, "responses": responses, "attention_mask": attention, "input_ids": input_ids,
         "position_ids": positions}
    )  # fmt: skip
    inputs = policy_inputs(batch, [0, 1], torch.device("cpu"))
    # The first prompt column is padding in every row; the last response column too.
    assert inputs.input_ids.tolist() == [[0, 5, 6, 11, 12], [7, 8, 9, 13, 0]]
    assert inputs.attention_mask.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert inputs.responses.tolist() == [[11, 12], [13, 0]]
    assert inputs.response_start == 3
    assert inputs.position_ids.shape == (4, 2, 5) and inputs.position_ids[0, 0].tolist() == [1, 2, 3, 4, 5]
    assert inputs.pixel_values is None and inputs.image_grid_thw is None


def test_within_group_std_is_zero_only_without_a_learning_signal():
    groups = np.array(["1-0", "1-0", "1-1", "1-1"], dtype=object)
    assert within_group_std([1.0, 0.0, 0.5, 0.5], groups) == pytest.approx(0.25)
    assert within_group_std([0.3, 0.3, 0.0, 0.0], groups) == 0.0
