"""`make demo`'s job with its defaults: corpus → teacher trajectories → SFT → evaluation → GRPO → evaluation → viewer.

What the demo must show: after SFT the policy follows the action grammar; every GRPO step carries a learning signal
(reward spread within groups, so non-zero loss and gradients); the printed table is the evaluation harness's own.
"""

import json

import pytest

from unidoc_rl.demo import TABLE_COLUMNS, main, table_row
from unidoc_rl.jsonl import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory, repo_root):
    if not (repo_root / ".venv-sft/bin/python").exists():
        pytest.skip("the SFT environment is missing: run `make sft-env` (make test creates it)")
    out = tmp_path_factory.mktemp("demo")
    return out, main(["--out_dir", str(out)])


def test_after_sft_the_policy_follows_the_action_grammar(demo):
    _, summary = demo
    on_train = summary["sft_on_training_samples"]
    assert on_train["format"] >= 0.9
    assert on_train["invalid rate"] <= 0.1
    untrained = summary["held_out"]["untrained"]
    assert untrained["format"] < 0.1  # the random policy does not: SFT is what taught it


def test_every_grpo_step_has_a_learning_signal(demo):
    out, summary = demo
    steps = summary["grpo_steps"]
    assert [step["step"] for step in steps] == [1, 2, 3, 4]
    for step in steps:
        assert step["train/reward_std_within_groups"] > 0.0
        assert step["actor/pg_loss"] != 0.0 and step["actor/grad_norm"] > 0.0
    rewards = {(line["step"], line["group"]): [] for line in read_jsonl(out / "grpo/logs/trajectories.jsonl")}
    for line in read_jsonl(out / "grpo/logs/trajectories.jsonl"):
        rewards[(line["step"], line["group"])].append(line["reward"])
    for step in range(1, 5):
        assert any(len(set(group)) > 1 for (s, _), group in rewards.items() if s == step)


def test_the_table_is_the_evaluation_harness_output(demo):
    out, summary = demo
    for name, run in summary["paths"]["evaluations"].items():
        overall = json.loads((out / "eval" / run.rsplit("/", 1)[-1] / "summary.json").read_text())["overall"]
        assert summary["held_out"][name] == table_row(overall)
        for title, (section, key) in TABLE_COLUMNS:
            figure = summary["held_out"][name][title]
            expected = (overall.get(section) or {}).get(key)
            assert figure == (None if expected is None else round(float(expected), 3))
    for site in summary["paths"]["viewer"].values():
        assert "<html" in open(site).read().lower()
    assert (out / "commands.sh").read_text().count("\n") >= 10
