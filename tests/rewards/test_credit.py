"""Per-action credit on pure tensors, against hand-computed advantages (docs/rewards.md, "Credit assignment")."""

import math

import numpy as np
import pytest
import torch

from unidoc_rl.env.episode import ActionKind as K
from unidoc_rl.rewards.credit import credit_metrics, grpo_scalars, per_action_advantages, turn_spans
from unidoc_rl.rewards.presets import get_preset

W = get_preset("unidoc").weights  # answer 0.6, retrieval = selection = crop = format = 0.1

# One GRPO group of four trajectories of different shapes; 1 = model token, 0 = observation (or padding).
MASK = torch.tensor(
    [
        [1, 1, 0, 0, 0, 0, 0, 0, 0],  # T0: answer only (no search): format 0, gated
        [1, 1, 0, 0, 1, 1, 0, 0, 0],  # T1: search, answer
        [1, 1, 0, 1, 0, 1, 1, 0, 1],  # T2: search, select, bbox, answer
        [1, 0, 1, 0, 1, 0, 1, 1, 0],  # T3: search, invalid, select, answer
    ]
)
KINDS = [
    [K.ANSWER],
    [K.SEARCH, K.ANSWER],
    [K.SEARCH, K.SELECT, K.BBOX, K.ANSWER],
    [K.SEARCH, K.INVALID, K.SELECT, K.ANSWER],
]
COMPONENTS = {  # T0, T1, T2, T3
    "answer": torch.tensor([0.0, 1.0, 1.0, 0.0]),
    "retrieval": torch.tensor([0.0, 0.5, 1.0, 0.5]),
    "selection": torch.tensor([0.0, 1.0, 1.0, 0.0]),  # T1 has no select turn: left out of selection's statistics
    "crop": torch.tensor([0.0, 1.0, 0.0, 1.0]),  # only T2 has a bbox turn: a group of one, normalized to 0
    "format": torch.tensor([0.0, 1.0, 1.0, 1.0]),  # zero spread among T1..T3: normalized to 0
}
TOTALS = torch.tensor([0.0, 0.95, 0.9, 0.25])  # 0.6*answer + 0.1*(retrieval + selection + crop + format); T0 gated
GATED = [True, False, False, False]
INDEX = np.array(["q"] * 4, dtype=object)


def test_turn_spans_are_the_runs_of_model_tokens():
    assert turn_spans(MASK[2]) == [(0, 2), (3, 4), (5, 7), (8, 9)]
    assert turn_spans(MASK[3]) == [(0, 1), (2, 3), (4, 5), (6, 8)]
    assert turn_spans(torch.zeros(3)) == []


def test_hand_computed_per_action_advantages():
    result = per_action_advantages(MASK, INDEX, TOTALS, COMPONENTS, KINDS, GATED, W)
    # answer over T1..T3 = (1, 1, 0): mean 2/3, unbiased std sqrt(1/3) -> (+1/sqrt3, +1/sqrt3, -2/sqrt3)
    s3 = math.sqrt(1 / 3)
    n_answer = [(1 / 3) / s3, (1 / 3) / s3, -(2 / 3) / s3]
    # retrieval over T1..T3 = (0.5, 1, 0.5): mean 2/3, std sqrt(1/12) -> (-1/sqrt3, 2/sqrt3, -1/sqrt3)
    s12 = math.sqrt(1 / 12)
    n_retrieval = [-(1 / 6) / s12, (1 / 3) / s12, -(1 / 6) / s12]
    # selection over T2, T3 = (1, 0): mean 0.5, std sqrt(1/2) -> (+0.7071, -0.7071)
    n_selection = [0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5)]
    outcome = [0.6 * value for value in n_answer]  # + 0.1 * format (0: no spread) on every model turn
    # T0 is gated: verl's GRPO on the totals (0, 0.95, 0.9, 0.25): mean 0.525, unbiased std 0.473463
    grpo_t0 = -0.525 / math.sqrt(0.6725 / 3)
    expected = torch.tensor(
        [
            [grpo_t0, grpo_t0, 0, 0, 0, 0, 0, 0, 0],
            [*[outcome[0] + 0.1 * n_retrieval[0]] * 2, 0, 0, outcome[0], outcome[0], 0, 0, 0],
            [
                *[outcome[1] + 0.1 * n_retrieval[1]] * 2,  # search
                0,
                outcome[1] + 0.1 * n_selection[0],  # select
                0,
                outcome[1],  # bbox: crop normalized in a group of one is 0
                outcome[1],
                0,
                outcome[1],  # answer
            ],
            [
                outcome[2] + 0.1 * n_retrieval[2],  # search
                0,
                outcome[2],  # invalid: the outcome and format only
                0,
                outcome[2] + 0.1 * n_selection[1],  # select
                0,
                outcome[2],  # answer
                outcome[2],
                0,
            ],
        ]
    )
    assert torch.allclose(result.advantages, expected, atol=1e-5)
    # The same figures, written out: T2's search turn 0.6*0.57735 + 0.1*1.1547 = 0.46188.
    assert result.advantages[2, 0].item() == pytest.approx(0.46188, abs=1e-5)
    assert result.advantages[3, 4].item() == pytest.approx(-0.76353, abs=1e-5)
    assert result.per_action == [False, True, True, True]
    assert result.turn_advantages[0] == [pytest.approx(grpo_t0, abs=1e-5)]
    assert result.turn_advantages[2] == pytest.approx([0.46188, 0.41712, 0.34641, 0.34641], abs=1e-5)


def test_unmapped_trajectory_falls_back_to_grpo_and_is_counted():
    kinds = [*KINDS[:3], [K.SEARCH, K.ANSWER]]  # T3's record has 2 turns but its mask has 4 runs
    result = per_action_advantages(MASK, INDEX, TOTALS, COMPONENTS, kinds, GATED, W)
    default = grpo_scalars(TOTALS, INDEX)
    assert result.mapped == [True, True, True, False]
    assert torch.allclose(result.advantages[3], default[3] * MASK[3].float())
    assert torch.allclose(result.advantages[0], default[0] * MASK[0].float())
    # T3 left every component's statistics: answer over T1, T2 = (1, 1) has no spread, retrieval (0.5, 1) does.
    assert result.advantages[1, 4].item() == pytest.approx(0.0, abs=1e-6)
    assert result.advantages[2, 0].item() == pytest.approx(0.1 * 0.25 / math.sqrt(0.125), abs=1e-5)
    metrics = credit_metrics(result.advantages, MASK, result.default, result.spans, kinds, result.mapped)
    assert metrics["unidoc/credit/unmapped"] == 1.0


def test_default_estimator_equals_verls_grpo():
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    index = np.array(["a", "a", "a", "b", "b", "c"], dtype=object)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1], [1, 1, 0], [1, 0, 1]])
    rewards = torch.zeros(6, 3)
    rewards[torch.arange(6), torch.tensor([1, 0, 2, 2, 1, 2])] = torch.tensor([0.9, 0.1, 0.4, 0.3, 0.3, 0.7])
    for norm in (True, False):
        verl_adv, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
        ours = grpo_scalars(rewards.sum(-1), index, norm_by_std=norm).unsqueeze(-1) * mask
        assert torch.equal(ours, verl_adv)
    # Every trajectory gated: per-action credit is the default estimator, token for token.
    kinds = [[K.ANSWER]] * 6
    components = {name: torch.rand(6) for name in ("answer", "retrieval", "selection", "crop", "format")}
    result = per_action_advantages(mask, index, rewards.sum(-1), components, kinds, [True] * 6, W)
    assert torch.equal(result.advantages, compute_grpo_outcome_advantage(rewards, mask, index)[0])


def test_credit_metrics_per_action_kind_and_sign_flips():
    result = per_action_advantages(MASK, INDEX, TOTALS, COMPONENTS, KINDS, GATED, W)
    metrics = credit_metrics(
        result.advantages, MASK, result.default, result.spans, KINDS, result.mapped, result.per_action
    )
    # select turns: T2's 1 token at 0.41712, T3's 1 token at -0.76353 -> mean |A| = 0.59033
    assert metrics["unidoc/credit/abs_advantage/select"] == pytest.approx((0.41712 + 0.76353) / 2, abs=1e-5)
    assert metrics["unidoc/credit/abs_advantage/bbox"] == pytest.approx(0.34641, abs=1e-5)
    # Default advantages: T0 < 0, T1 > 0, T2 > 0, T3 < 0; every per-action token keeps its trajectory's sign here.
    assert metrics["unidoc/credit/sign_flip_share"] == 0.0
    assert metrics["unidoc/credit/unmapped"] == 0.0
    assert metrics["unidoc/credit/per_action_share"] == 0.75
    # Make T1's retrieval terrible and its answer term small: its search turn's sign flips against its default.
    flipped = per_action_advantages(MASK, INDEX, TOTALS, COMPONENTS, KINDS, GATED, {**W, "retrieval": 1.0})
    flip = credit_metrics(flipped.advantages, MASK, flipped.default, flipped.spans, KINDS, flipped.mapped)
    # T1 search: 0.6*0.57735 - 1.0*0.57735 < 0 while T1's default is > 0: 2 of the 17 model tokens flip
    assert flip["unidoc/credit/sign_flip_share"] == pytest.approx(2 / 17)


def test_docs_worked_example_is_this_computation():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "rewards.md").read_text(encoding="utf-8")
    result = per_action_advantages(MASK, INDEX, TOTALS, COMPONENTS, KINDS, GATED, W)
    for row, (kinds, values) in enumerate(zip(KINDS, result.turn_advantages, strict=True)):
        turns = ", ".join(kind.value for kind in kinds)
        advantages = ", ".join(f"{value:+.4f}" for value in values)
        assert f"| T{row} | {turns} | {advantages} | {float(result.default[row]):+.4f} |" in docs
