"""`bash scripts/train.sh` on CPU: verl's own trainer (main_ppo, V1, FSDP2 on gloo, Ray) with the project's plugin.

The tiny offline policy trains two GRPO steps on the sample corpus's RL parquet, with the real search service (bm25
index of examples/corpus) and a scripted judge on loopback; it validates before training and at the end, writes a
checkpoint, and a second run resumes from it for one more step. The actor takes one trajectory per micro-batch, as
on GPU nodes (configs/unidoc_grpo.yaml), so every trajectory in which the untrained policy showed no page (in
practice all of them) is a micro-batch without images (docs/training.md, on verl's forward over such micro-batches).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def train(services, train_sh, *overrides: str) -> tuple[dict[int, dict[str, float | str]], str, float]:
    root = services["root"]
    return train_sh(
        f"trainer.default_local_dir={root / 'checkpoints'}",
        f"trainer.rollout_data_dir={root / 'rollouts'}",
        f"unidoc_trainer.trajectory_log={root / 'trajectories.jsonl'}",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
        *overrides,
    )


def trajectory_log(root: Path) -> dict[int, list[dict]]:
    """The unidoc_sync trainer's trajectory log by step."""
    steps: dict[int, list[dict]] = {}
    for line in (root / "trajectories.jsonl").read_text().splitlines():
        record = json.loads(line)
        steps.setdefault(record["step"], []).append(record)
    return steps


COMPONENTS = ("format", "retrieval", "selection", "crop", "answer")


def viewer_shows_the_trajectory_log(root: Path, steps: dict, tmp_path: Path) -> None:
    """The viewer reads the trainer's log as written: every trajectory, with the reward and components verl logged
    for its step, on a list row and an episode page whose judge note matches the reward's own flags."""
    from unidoc_rl.viewer.app import Viewer, ViewerSettings
    from unidoc_rl.viewer.images import resolve_pages_dir
    from unidoc_rl.viewer.links import ServerLinks

    run = tmp_path / "view"
    run.mkdir()
    shutil.copy(root / "trajectories.jsonl", run / "trajectories.jsonl")
    viewer = Viewer(ViewerSettings(run_dir=run, pages_dir=resolve_pages_dir(root / "corpus")))
    rows = viewer.index.rows
    assert not viewer.index.bad_lines and sorted(row.step for row in rows) == [1] * 4 + [2] * 4
    for step in (1, 2):
        logged = [row for row in rows if row.step == step]
        assert sum(row.reward for row in logged) / 4 == pytest.approx(steps[step]["unidoc/reward/score"], abs=1e-5)
        for name in COMPONENTS:
            mean = sum(row.components[name] for row in logged) / 4
            assert mean == pytest.approx(steps[step][f"unidoc/reward/{name}"], abs=1e-5), name
    for row in rows:
        reward = viewer.index.entry(row.source, row.line).line.reward
        html = viewer.episode_html(row.source, row.line, ServerLinks())
        for name in COMPONENTS:
            assert f"<td class='num'>{getattr(reward, name):.3f}</td></tr>" in html.split(f"data-component='{name}'")[1]
        assert ("answer reward: judge called" in html) == reward.judge_called
        assert ("<tr><th>judge verdict</th><td>–</td></tr>" in html) == (not reward.judge_called)


@pytest.mark.timeout(1500)
def test_train_sh_trains_validates_checkpoints_and_resumes_on_cpu(services, train_sh, tmp_path):
    root = services["root"]
    steps, _, seconds = train(services, train_sh)
    print(f"main_ppo, validation + 2 GRPO steps + validation + checkpoint: {seconds:.0f} s")

    assert sorted(steps) == [0, 1, 2]  # step 0: validation before training
    for step in (1, 2):
        metrics = steps[step]
        # verl's own training metrics: the actor ran forward and backward over the step's micro-batches. Its
        # gradient is zero exactly when no GRPO group's rewards spread (no KL loss or entropy term here); the
        # untrained policy's trajectories usually all score 0.
        grad_norm = metrics["actor/grad_norm"]
        assert math.isfinite(metrics["actor/pg_loss"]) and math.isfinite(grad_norm)
        assert (grad_norm > 0.0) == (metrics["unidoc/reward/std_within_groups"] > 0.0)
        assert metrics["training/global_step"] == step
        # The project's per-step metrics (unidoc_sync trainer).
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
        assert len(rows) == 2 * 2 and all("score" in row and row["output"] for row in rows)
    # The steps trained on trajectories as the policy wrote them, text-only ones among them (micro-batches of one).
    trained = trajectory_log(root)
    assert sorted(trained) == [1, 2] and all(len(lines) == 2 * 2 for lines in trained.values())
    assert any(not line["episode"]["shown_page_ids"] for lines in trained.values() for line in lines)
    for step, lines in trained.items():
        searches = sum(len(line["episode"]["searches"]) for line in lines) / len(lines)
        assert steps[step]["unidoc/agent/searches"] == pytest.approx(searches)
    viewer_shows_the_trajectory_log(root, steps, tmp_path)

    # Resume: the step counter continues from the checkpoint; only step 3 trains.
    resumed, output, seconds = train(
        services, train_sh, "trainer.total_training_steps=3", "trainer.val_before_train=false", "trainer.test_freq=0"
    )
    print(f"main_ppo resume + 1 GRPO step + checkpoint: {seconds:.0f} s")
    assert sorted(resumed) == [3], output[-3000:]
    assert sorted(trajectory_log(root)) == [1, 2, 3]
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
