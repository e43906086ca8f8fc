"""Every settings section rejects misspelled keys with one message that lists them and the known ones."""

import pytest

from unidoc_rl.common.settings_keys import reject_unknown_keys
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.judge.settings import JudgeSettings
from unidoc_rl.rewards.settings import RewardSettings


def test_message_lists_the_unknown_and_the_known_keys():
    with pytest.raises(ValueError) as error:
        reject_unknown_keys({"top_k": 1, "zeta": 2, "alpha": 3}, ["top_k", "beta"], "demo")
    assert str(error.value) == "unknown demo settings ['alpha', 'zeta']; known: ['beta', 'top_k']"
    reject_unknown_keys({"top_k": 1}, ["top_k", "beta"], "demo")


@pytest.mark.parametrize(
    ("build", "section", "valid"),
    [
        (AgentSettings.from_mapping, "unidoc_agent", {"max_turns": 3, "search_top_k": 5}),
        (RewardSettings.from_mapping, "reward", {"preset": "vrag"}),
        (JudgeSettings.from_mapping, "judge", {"max_concurrency": 4}),
    ],
)
def test_each_section_rejects_a_typo_and_accepts_its_keys(build, section, valid):
    with pytest.raises(ValueError, match=rf"unknown {section} settings \['max_turnz'\]"):
        build({**valid, "max_turnz": 3})
    build(valid)
