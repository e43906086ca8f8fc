"""`bash scripts/train.sh` on CPU: verl's own trainer (main_ppo, V1, FSDP2 on gloo, Ray) with the project's plugin.

The tiny offline policy trains two GRPO steps on the sample corpus's RL parquet, with the real search service (bm25
index of examples/corpus) and a scripted judge on loopback; it validates before training and at the end, writes a
checkpoint, and a second run resumes from it for one more step. The rollout opens every episode with a scripted
search (`rollout.custom.engine=scripted_opening`), so that every trajectory carries page images although the
policy is untrained (see docs/training.md for why text-only batches cannot train on verl 0.9.1).
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

OPENING = "<search>Northwind revenue</search>"


def train(services, train_sh, *overrides: str) -> tuple[dict[int, dict[str, float | str]], str, float]:
    root = services["root"]
    return train_sh(
        f"trainer.default_local_dir={root / 'checkpoints'}",
        f"trainer.rollout_data_dir={root / 'rollouts'}",
        "actor_rollout_ref.rollout.n=2",
        "+actor_rollout_ref.rollout.custom.engine=scripted_opening",
        f"+actor_rollout_ref.rollout.custom.opening_turn='{OPENING}'",
        "actor_rollout_ref.rollout.calculate_log_probs=false",
        *overrides,
    )


@pytest.mark.timeout(1500)
def test_train_sh_trains_validates_checkpoints_and_resumes_on_cpu(services, train_sh):
    root = services["root"]
    steps, _, seconds = train(services, train_sh)
    print(f"main_ppo, validation + 2 GRPO steps + validation + checkpoint: {seconds:.0f} s")

    assert sorted(steps) == [0, 1, 2]  # step 0: validation before training
    for step in (1, 2):
        metrics = steps[step]
        # verl's own training metrics: the actor was updated on the step's batch.
        assert "actor/pg_loss" in metrics and "actor/grad_norm" in metrics
        assert metrics["training/global_step"] == step
        # The project's per-step metrics (unidoc_sync trainer): every episode opened with the scripted search.
        assert metrics["unidoc/agent/searches"] >= 1.0
        assert metrics["unidoc/agent/search_failures"] == 0.0
        assert 1.0 <= metrics["unidoc/agent/turns"] <= 4.0
        for component in ("format", "retrieval", "selection", "crop", "answer", "judge_fallback", "score"):
            assert 0.0 <= metrics[f"unidoc/reward/{component}"] <= 1.0
        assert metrics["unidoc/reward/score"] == pytest.approx(metrics["critic/score/mean"], abs=1e-6)
    for step in (0, 2):
        assert "val-core/samples/reward/mean@1" in steps[step]
        assert "val-aux/samples/retrieval/mean@1" in steps[step]

    checkpoints = root / "checkpoints"
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert (checkpoints / "global_step_2" / "actor").is_dir()
    for step in (1, 2):
        rows = [json.loads(line) for line in (root / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
        assert len(rows) == 2 * 2 and all("score" in row and OPENING in row["output"] for row in rows)

    # Resume: the step counter continues from the checkpoint; only step 3 trains.
    resumed, output, seconds = train(
        services, train_sh, "trainer.total_training_steps=3", "trainer.val_before_train=false", "trainer.test_freq=0"
    )
    print(f"main_ppo resume + 1 GRPO step + checkpoint: {seconds:.0f} s")
    assert sorted(resumed) == [3], output[-3000:]
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
