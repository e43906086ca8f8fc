"""The verl side of per-action credit: the registered estimator reads verl's `extra_fields` column, verl's own
`compute_advantage` cannot feed it, and the trajectory log carries each turn's advantage."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage

import unidoc_rl.verl_plugin  # noqa: F401  (registers the estimator)
from unidoc_rl.env.episode import ActionKind
from unidoc_rl.rewards.credit import map_turns, mean_turn_advantages, per_action_advantages
from unidoc_rl.rewards.presets import get_preset
from unidoc_rl.rewards.scorer import RewardBreakdown
from unidoc_rl.verl_plugin.credit import ESTIMATOR, credit_inputs, preset_from
from unidoc_rl.verl_plugin.trainer import trajectory_lines

MASK = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1], [1, 1, 1, 0]])


def row(kinds, **components):
    """A trajectory's extra fields as verl carries them: the reward breakdown as floats (`metrics()`)."""
    info = RewardBreakdown(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, False, False, False).metrics()
    info.update(components)
    return {"reward_extra_info": info, "episode": {"turns": [{"text": "", "action": kind} for kind in kinds]}}


EXTRA = [
    row(["search", "answer"], answer=1.0, retrieval=1.0, selection=1.0, crop=1.0, format=1.0),
    row(["search", "answer"], answer=0.0, retrieval=0.5, format=1.0),
    row(["answer"]),  # format 0: gated
]


def test_estimator_reads_the_extra_fields_column():
    preset = get_preset("unidoc")
    rewards = torch.zeros(3, 4)
    rewards[0, 3], rewards[1, 3] = 1.0, 0.15
    index = np.array(["g", "g", "g"], dtype=object)
    column = np.empty(3, dtype=object)
    column[:] = EXTRA
    estimator = get_adv_estimator_fn(ESTIMATOR)
    advantages, returns = estimator(
        token_level_rewards=rewards, response_mask=MASK, index=index, non_tensor_batch={"extra_fields": column}
    )
    inputs = credit_inputs(EXTRA, preset)
    assert inputs.gated == [False, False, True]
    assert inputs.turn_kinds[0] == [ActionKind.SEARCH, ActionKind.ANSWER]
    expected = per_action_advantages(
        MASK, index, rewards.sum(-1), inputs.components, inputs.turn_kinds, inputs.gated, preset.weights
    )
    assert torch.equal(advantages, expected.advantages) and torch.equal(returns, advantages)
    # answer (1, 0) -> (+0.7071, -0.7071), retrieval (1, 0.5) -> (+0.7071, -0.7071), format no spread.
    assert advantages[0].tolist() == pytest.approx([0.7 * 0.70711] * 2 + [0, 0.6 * 0.70711], abs=1e-5)
    assert mean_turn_advantages(advantages, *map_turns(MASK, inputs.turn_kinds)) == [
        pytest.approx([0.494975, 0.424264], abs=1e-5),
        pytest.approx([-0.494975, -0.424264], abs=1e-5),
        [pytest.approx(float(advantages[2, 0]))],
    ]


def test_verls_compute_advantage_does_not_pass_the_batch_so_the_estimator_says_which_trainer_to_use():
    data = DataProto.from_dict(
        tensors={"token_level_rewards": torch.zeros(3, 4), "response_mask": MASK},
        non_tensors={"uid": np.array(["g", "g", "g"], dtype=object), "extra_fields": np.array(EXTRA, dtype=object)},
    )
    with pytest.raises(ValueError, match="trainer_mode=unidoc_sync"):
        compute_advantage(data, adv_estimator=ESTIMATOR, config=OmegaConf.create({}))


def test_preset_and_credit_weights_come_from_the_config():
    config = OmegaConf.create(
        {"reward": {"reward_kwargs": {"preset": "vrag"}}, "unidoc_trainer": {"credit_weights": {"format": 0.5}}}
    )
    assert preset_from(config).weights == {
        "answer": 0.7,
        "retrieval": 0.2,
        "selection": 0.0,
        "crop": 0.0,
        "format": 0.5,
    }


def test_trajectory_log_lines_carry_turn_advantages():
    keys = ["p1_0_0", "p1_1_0"]
    lines = trajectory_lines(3, keys, EXTRA[:2], {"p1_0_0": [0.5, 0.25], "p1_1_0": None})
    assert lines[0]["turn_advantages"] == [0.5, 0.25] and "turn_advantages" not in lines[1]
