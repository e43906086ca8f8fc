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
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unidoc_rl.testing.sample_corpus import index_sample_corpus

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
STEP_LINE = re.compile(r"^(?:\x1b\[[0-9;]*m)?(?:\(TaskRunnerV1 pid=\d+\)(?:\x1b\[[0-9;]*m)? )?step:(\d+) - (.*)$")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    from search_engine.search_engine_api import ServiceConfig, create_app
    from unidoc_rl.data.prepare import main as prepare_main
    from unidoc_rl.testing.scripted_llm_server import ScriptedLLMServer, exact_match_judge
    from unidoc_rl.testing.serving import ThreadedUvicorn

    root = tmp_path_factory.mktemp("main_ppo")
    corpus = index_sample_corpus(root / "corpus")
    prepare_main(
        [
            "--samples",
            str(REPO_ROOT / "examples/samples.json"),
            "--out_dir",
            str(root / "data"),
            "--index_dir",
            str(corpus / "index"),
            "--val_size",
            "2",
        ]
    )
    with (
        ThreadedUvicorn(create_app(ServiceConfig(dataset_dir=str(corpus))), lifespan="off") as search,
        ScriptedLLMServer(exact_match_judge()) as judge,
    ):
        yield {"root": root, "search_url": search.url, "judge_url": judge.base_url}


def train(services, *overrides: str, timeout_s: int = 900) -> tuple[dict[int, dict[str, str]], str, float]:
    """Runs train.sh; returns the metrics verl's console logger printed per step, the whole output, seconds."""
    root = services["root"]
    env = {
        **os.environ,
        "VERL_PLATFORM": "cpu",
        "MODEL_PATH": "tiny",
        "TRAIN_FILE": str(root / "data/train.parquet"),
        "VAL_FILE": str(root / "data/val.parquet"),
        "SEARCH_URL": services["search_url"],
        "JUDGE_URL": services["judge_url"],
        "PYTHON": sys.executable,
        "RAY_DEDUP_LOGS": "0",
    }
    started = time.monotonic()
    result = subprocess.run(
        [
            "bash",
            "scripts/train.sh",
            f"trainer.default_local_dir={root / 'checkpoints'}",
            f"trainer.rollout_data_dir={root / 'rollouts'}",
            f"unidoc_trainer.trajectory_log={root / 'trajectories.jsonl'}",
            "actor_rollout_ref.rollout.n=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
            *overrides,
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    steps: dict[int, dict[str, str]] = {}
    for line in output.splitlines():
        match = STEP_LINE.match(line.strip())
        if match:
            pairs = (item.split(":", 1) for item in match.group(2).split(" - ") if ":" in item)
            steps.setdefault(int(match.group(1)), {}).update({key: value for key, value in pairs})
    return steps, output, seconds


def trajectory_log(root: Path) -> dict[int, list[dict]]:
    """The unidoc_sync trainer's trajectory log by step."""
    steps: dict[int, list[dict]] = {}
    for line in (root / "trajectories.jsonl").read_text().splitlines():
        record = json.loads(line)
        steps.setdefault(record["step"], []).append(record)
    return steps


def value(text: str) -> float:
    return float(re.sub(r"^np\.float\d+\((.*)\)$", r"\1", text))


@pytest.mark.timeout(1500)
def test_train_sh_trains_validates_checkpoints_and_resumes_on_cpu(services):
    root = services["root"]
    steps, _, seconds = train(services)
    print(f"main_ppo, validation + 2 GRPO steps + validation + checkpoint: {seconds:.0f} s")

    assert sorted(steps) == [0, 1, 2]  # step 0: validation before training
    for step in (1, 2):
        metrics = steps[step]
        # verl's own training metrics: the actor ran forward and backward over the step's micro-batches. Its
        # gradient is zero exactly when no GRPO group's rewards spread (no KL loss or entropy term here); the
        # untrained policy's trajectories usually all score 0.
        grad_norm = value(metrics["actor/grad_norm"])
        assert math.isfinite(value(metrics["actor/pg_loss"])) and math.isfinite(grad_norm)
        assert (grad_norm > 0.0) == (value(metrics["unidoc/reward/std_within_groups"]) > 0.0)
        assert value(metrics["training/global_step"]) == step
        # The project's per-step metrics (unidoc_sync trainer).
        assert value(metrics["unidoc/agent/search_failures"]) == 0.0
        assert 1.0 <= value(metrics["unidoc/agent/turns"]) <= 4.0
        for component in ("format", "retrieval", "selection", "crop", "answer", "judge_fallback", "score"):
            assert 0.0 <= value(metrics[f"unidoc/reward/{component}"]) <= 1.0
        assert value(metrics["unidoc/reward/score"]) == pytest.approx(value(metrics["critic/score/mean"]), abs=1e-6)
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
        assert value(steps[step]["unidoc/agent/searches"]) == pytest.approx(searches)

    # Resume: the step counter continues from the checkpoint; only step 3 trains.
    resumed, output, seconds = train(
        services, "trainer.total_training_steps=3", "trainer.val_before_train=false", "trainer.test_freq=0"
    )
    print(f"main_ppo resume + 1 GRPO step + checkpoint: {seconds:.0f} s")
    assert sorted(resumed) == [3], output[-3000:]
    assert sorted(trajectory_log(root)) == [1, 2, 3]
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
