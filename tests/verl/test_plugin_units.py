"""The plugin's pieces that run without Ray: step metrics, weight-version stamping, the trl stand-in, the platform."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.workers.rollout.replica import TokenOutput

from unidoc_rl.agent.verl_worker import VersionRecordingClient, _trajectory_versions, stamp_versions
from unidoc_rl.env.episode import ActionKind, CropStep, EpisodeRecord, FinishReason, SearchStep
from unidoc_rl.verl_plugin.metrics import group_spread_metrics, rollout_metrics


def episode(turns: int, invalid: int, crops: int, answer: str | None, forced: bool, failed_searches: int):
    searches = [SearchStep(query="q", retrieved=["a_1"], candidates=["a_1"])]
    searches[0].crops = [CropStep(page_id="a_1", boxes_display=[[0, 0, 9, 9]], boxes_norm1000=[[0, 0, 9, 9]])] * crops
    searches += [SearchStep(query="down", retrieved=[], candidates=[], failed=True) for _ in range(failed_searches)]
    # An answer ends the episode: its last turn, in its own turn or forced by a spent turn budget.
    answering = [ActionKind.ANSWER] if answer is not None else []
    actions = [ActionKind.INVALID] * invalid + [ActionKind.SEARCH] * (turns - invalid - len(answering)) + answering
    finish = FinishReason.MAX_TURNS if forced or answer is None else FinishReason.ANSWERED
    return EpisodeRecord(
        searches=searches, actions=actions, answer=answer, forced_answer=forced, finish_reason=finish, num_turns=turns
    ).to_dict()


def test_rollout_metrics_average_components_and_episode_behaviour():
    rows = [
        {
            "episode": episode(4, 1, 1, "845", False, 0),
            "reward_extra_info": {"score": 0.9, "answer": 1.0, "crop": 1.0, "judge_fallback": 0.0},
        },
        {
            "episode": episode(2, 0, 0, "12", True, 2),
            "reward_extra_info": {"score": 0.1, "answer": 0.0, "crop": 0.0, "judge_fallback": 1.0},
        },
        # Another agent loop's trajectory: a reward component but no episode record.
        {"reward_extra_info": {"score": 0.5}},
        None,
    ]
    metrics = rollout_metrics(rows)
    assert metrics["unidoc/reward/score"] == pytest.approx(0.5)
    assert metrics["unidoc/reward/answer"] == 0.5 and metrics["unidoc/reward/judge_fallback"] == 0.5
    assert metrics["unidoc/agent/turns"] == 3.0
    assert metrics["unidoc/agent/invalid_actions"] == 0.5
    assert metrics["unidoc/agent/crop_rate"] == 0.5
    assert metrics["unidoc/agent/answered"] == 1.0 and metrics["unidoc/agent/forced_answers"] == 0.5
    assert metrics["unidoc/agent/searches"] == 2.0 and metrics["unidoc/agent/search_failures"] == 1.0
    assert rollout_metrics([]) == {}


def test_group_spread_groups_trajectories_by_prompt_uid():
    keys = ["p1_0_0", "p1_1_0", "p2_0_0", "p2_1_0", "p3_0_0"]
    rows = [{"reward_extra_info": {"score": value}} for value in (1.0, 0.0, 0.3, 0.3)] + [{"reward_extra_info": {}}]
    # p1 spreads 0.5, p2 none; p3 has no score and is left out.
    assert group_spread_metrics(keys, rows) == {"unidoc/reward/std_within_groups": pytest.approx(0.25)}
    same_scores = [{"reward_extra_info": {"score": 0.3}}] * 4
    assert group_spread_metrics(keys[:4], same_scores) == {"unidoc/reward/std_within_groups": 0.0}
    assert group_spread_metrics([], []) == {}


class VersionedServer:
    def __init__(self, versions):
        self.versions = iter(versions)

    async def generate(self, request_id, **kwargs):
        version = next(self.versions)
        extra = {} if version is None else {"min_global_steps": version, "max_global_steps": version}
        return TokenOutput(token_ids=[1], extra_fields=extra)


def loop_output(**extra) -> AgentLoopOutput:
    return AgentLoopOutput(prompt_ids=[1], response_ids=[2], response_mask=[1], metrics={}, extra_fields=extra)


async def test_a_trajectory_gets_the_span_of_weight_versions_that_generated_it():
    client = VersionRecordingClient(VersionedServer([3, 4, None, 5]))

    async def trajectory(calls: int):
        token = _trajectory_versions.set([])
        try:
            for _ in range(calls):
                await client.generate("r", prompt_ids=[1], sampling_params={})
            return list(_trajectory_versions.get())
        finally:
            _trajectory_versions.reset(token)

    first, second = await asyncio.gather(trajectory(2), trajectory(2))
    assert sorted(first + second) == [3, 3, 4, 4, 5, 5]  # each trajectory sees only its own calls
    output = loop_output()
    stamp_versions(output, [4, 3, 5])
    assert (output.extra_fields["min_global_steps"], output.extra_fields["max_global_steps"]) == (3, 5)
    own = loop_output(min_global_steps=1, max_global_steps=2)
    stamp_versions([own], [7])
    assert (own.extra_fields["min_global_steps"], own.extra_fields["max_global_steps"]) == (1, 2)
    untouched = loop_output()
    stamp_versions(untouched, [])
    assert "min_global_steps" not in untouched.extra_fields


def test_trl_stand_in_gives_verl_the_class_it_patches_where_trl_lacks_it():
    # Importing the plugin installs the stand-in (verl imports the plugin the same way, before any model load).
    code = (
        "import trl; import unidoc_rl.verl_plugin; "
        "from trl.experimental.ppo import AutoModelForCausalLMWithValueHead as A; "
        "print(getattr(trl, 'AutoModelForCausalLMWithValueHead', None) is None, A.__module__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "unidoc_rl.verl_plugin.trl_compat"]


def test_cpu_platform_is_selected_only_by_name():
    code = (
        "import os; os.environ['VERL_PLATFORM'] = 'cpu'; "
        "from unidoc_rl.verl_plugin import platform as p; p.register_platform(); "
        "from verl.utils.device import get_device_name, get_nccl_backend, get_device_id, get_resource_name; "
        "import torch; x = torch.ones(2).to(get_device_id()); "
        "detected = p.PlatformCPU().is_platform_available(); "
        "print(get_device_name(), get_nccl_backend(), x.device, get_resource_name(), detected)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["cpu", "gloo", "cpu", "GPU", "False"]


async def test_the_local_server_loads_synced_weights_and_stamps_their_step(tiny_policy_dir):
    import functools

    import torch

    from unidoc_rl.verl_plugin.local_rollout import LocalGenerationServer, build_engine

    factory = functools.partial(build_engine, str(tiny_policy_dir), 256, 4, 0)
    server = LocalGenerationServer(factory)
    model = server.engine.model
    name, tensor = next(iter(model.state_dict().items()))
    updated = {name: torch.full_like(tensor, 0.125)}
    assert server.load_weights(updated, global_steps=7) == 1
    assert torch.equal(model.state_dict()[name], updated[name])
    with pytest.raises(KeyError, match="not in the rollout model"):
        server.load_weights({"no.such.weight": tensor}, global_steps=8)
    assert server.global_steps == 7  # a refused sync changes nothing

    tokenizer = server.engine.tokenizer
    output = await server.generate(
        "r0", prompt_ids=tokenizer.encode("hello"), sampling_params={"max_tokens": 2, "temperature": 0}
    )
    assert output.extra_fields["global_steps"] == 7 and 1 <= len(output.token_ids) <= 2


def test_trajectory_lines_are_episode_log_lines():
    from unidoc_rl.episode_log import EpisodeLogLine
    from unidoc_rl.rewards.scorer import RewardBreakdown
    from unidoc_rl.verl_plugin.trainer import trajectory_lines

    record = episode(3, 0, 1, "845", False, 0)
    breakdown = RewardBreakdown(0.7, 1.0, 0.5, 1.0, 0.0, 1.0, True, False, True, search_failures=1)
    rows = [
        {"episode": record, "reward_extra_info": breakdown.metrics()},  # verl carries every field as a float
        {"reward_extra_info": {}},
        None,
    ]
    lines = json.loads(json.dumps(trajectory_lines(5, ["p9_0_0", "p9_1_0", "p9_2_0"], rows)))
    assert lines == [
        {
            "schema": 1,
            "uid": "",
            "step": 5,
            "group": "p9",
            "episode": record,
            "reward": {
                "score": 0.7,
                "format": 1.0,
                "retrieval": 0.5,
                "selection": 1.0,
                "crop": 0.0,
                "answer": 1.0,
                "judge_called": True,
                "judge_fallback": False,
                "judge_cached": True,
                "search_failures": 1,
                "forced_answer": False,
            },
        }
    ]
    assert EpisodeLogLine.from_dict(lines[0]).reward == breakdown


def test_cpu_platform_gives_vllm_servers_their_cpu_environment():
    from unidoc_rl.engine.vllm_server import cpu_environment
    from unidoc_rl.verl_plugin.platform import PlatformCPU

    # verl starts its vLLM server actors with this environment, which vLLM's engine and workers inherit.
    env = PlatformCPU().rollout_env_vars()
    assert env == cpu_environment()
    assert int(env["VLLM_CPU_KVCACHE_SPACE"]) >= 1 and env["HF_HUB_OFFLINE"] == "1"
