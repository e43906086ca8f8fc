"""`make demo` end to end with its defaults: corpus → teacher trajectories → SFT → GRPO (train.sh) → evaluation →
viewer, checked on what the demo must show.

One run of the whole pipeline (about 10 minutes on 2 cores) serves every assertion below; it needs LLaMA-Factory's
environment (.venv-sft, which `make test` creates).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from unidoc_rl.demo import GRPO_STEP_METRICS, REPO_ROOT, format_table, table_row

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    result = subprocess.run(
        [sys.executable, "-m", "unidoc_rl.demo", "--fresh", "--out_dir", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return out, json.loads((out / "summary.json").read_text()), result.stdout


def harness_overall(run_dir) -> dict:
    return json.loads((Path(run_dir) / "summary.json").read_text())["overall"]


@pytest.mark.timeout(2700)
def test_after_sft_the_policy_follows_the_action_grammar_on_the_training_samples(demo):
    _, summary, _ = demo
    on_train = summary["sft_on_training_samples"]
    assert on_train["format"] >= 0.9
    assert on_train["invalid rate"] <= 0.1
    # The untrained policy never writes a valid action: the grammar was learnt in SFT.
    assert summary["held_out"]["untrained"]["format"] == 0.0


@pytest.mark.timeout(2700)
def test_every_grpo_step_carries_a_learning_signal(demo):
    out, summary, _ = demo
    steps = summary["grpo_steps"]
    assert [step["step"] for step in steps] == [1, 2, 3, 4]
    for step in steps:
        assert set(step) == {"step", *GRPO_STEP_METRICS}
        assert step["reward_std_within_groups"] > 0.0
        assert step["advantage_max"] > 0.0
        assert step["pg_loss"] != 0.0 and step["grad_norm"] > 0.0
    # Trained through verl's trainer (train.sh): its checkpoint, and the project's trajectory log for the viewer.
    assert (out / "grpo/checkpoints/latest_checkpointed_iteration.txt").read_text().strip() == "4"
    lines = [json.loads(line) for line in (out / "grpo/logs/trajectories.jsonl").read_text().splitlines()]
    assert sorted({line["step"] for line in lines}) == [1, 2, 3, 4] and len(lines) == 4 * 4 * 4


@pytest.mark.timeout(2700)
def test_the_table_is_the_evaluation_harness_output(demo):
    out, summary, stdout = demo
    evaluations = summary["paths"]["evaluations"]
    assert list(summary["held_out"]) == ["untrained", "after SFT", "after GRPO"]
    for name, row in summary["held_out"].items():
        assert row == table_row(harness_overall(evaluations[name]))
    assert summary["sft_on_training_samples"] == table_row(harness_overall(out / "eval/sft_train"))
    assert format_table(summary["held_out"]) in stdout
    for site in summary["paths"]["viewer"].values():
        assert Path(site).is_file()
