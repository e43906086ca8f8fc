"""`algorithm.adv_estimator=unidoc_per_action` in verl's own trainer on CPU: two GRPO steps of the tiny policy
(fixtures and runner: conftest.py, as test_main_ppo_cpu.py), strict rewards, the per-action estimator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unidoc_rl.rewards.credit import grpo_scalars
from unidoc_rl.rewards.presets import get_preset

pytestmark = pytest.mark.slow


@pytest.mark.timeout(900)
def test_main_ppo_trains_two_steps_with_per_action_credit(services, train_sh):
    root = services["root"]
    log = root / "credit_trajectories.jsonl"
    steps, output, seconds = train_sh(
        f"trainer.default_local_dir={root / 'credit_checkpoints'}",
        f"unidoc_trainer.trajectory_log={log}",
        "algorithm.adv_estimator=unidoc_per_action",
        "reward.reward_kwargs.strict=true",
        "actor_rollout_ref.rollout.n=2",
        "trainer.val_before_train=false",
        "trainer.test_freq=0",
        "trainer.save_freq=0",
    )
    print(f"main_ppo, 2 GRPO steps with per-action credit: {seconds:.0f} s")
    assert sorted(steps) == [1, 2], output[-3000:]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted({line["step"] for line in lines}) == [1, 2]
    unidoc = get_preset("unidoc")
    for step in (1, 2):
        metrics = steps[step]
        assert metrics["unidoc/credit/unmapped"] == 0.0
        assert 0.0 <= metrics["unidoc/credit/sign_flip_share"] <= 1.0
        here = [line for line in lines if line["step"] == step]
        # Every trajectory's turns were mapped onto its tokens, one advantage per record turn.
        assert all(len(line["turn_advantages"]) == len(line["episode"]["turns"]) for line in here)
        # Gated trajectories (the untrained policy's, mostly) got verl's GRPO advantage on every turn.
        default = grpo_scalars(
            torch.tensor([line["reward"]["score"] for line in here]), np.array([line["group"] for line in here])
        )
        for line, expected in zip(here, default.tolist(), strict=True):
            if unidoc.gated(line["reward"]["format"]):
                assert line["turn_advantages"] == pytest.approx([expected] * len(line["turn_advantages"]), abs=1e-5)
