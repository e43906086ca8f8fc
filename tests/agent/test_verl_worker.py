"""The project's agent-loop worker: verl's outputs, bit for bit, with less work per trajectory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, AgentLoopWorker, register

from unidoc_rl.agent.agent_loop import UniDocAgentLoop
from unidoc_rl.agent.verl_worker import UniDocAgentLoopWorker, build_agent_loop_worker

RESULTS = {"revenue": ["report_2", "report_4", "report_1"]}
QUESTIONS = ["What was the revenue in 2023?", "Who signed the report?", "What was the revenue in 2023?"]


def script_for(tokenizer):
    """Revenue questions search then answer (images in context); others answer at once or misfire first."""

    def script(call) -> str:
        prompt = tokenizer.decode(call.prompt_ids)
        if "revenue" in prompt:
            return ["<search>revenue</search>", "<select>2</select>", "<answer>12</answer>"][call.turn]
        return ["<search>", "<answer>the board</answer>"][call.turn]

    return script


async def rollout(kit, policy_path, processor, url, worker_class, validate=False):
    client = kit.ScriptedLLMClient(processor.tokenizer, script_for(processor.tokenizer))
    config = kit.make_config(policy_path, url)
    worker = build_agent_loop_worker(config, client, processor=processor, worker_class=worker_class)
    batch = kit.question_batch(QUESTIONS)
    batch.meta_info["validate"] = validate
    return await worker.generate_sequences(batch), worker


def assert_same_multi_modal_inputs(ours: dict, verls: dict) -> None:
    assert sorted(ours) == sorted(verls)
    for key, value in verls.items():
        assert torch.equal(ours[key], value), key


async def test_outputs_equal_verls_worker_for_text_and_image_episodes(kit, policy_path, processor, static_search):
    url, _ = static_search(RESULTS)
    ours, _ = await rollout(kit, policy_path, processor, url, UniDocAgentLoopWorker)
    verls, _ = await rollout(kit, policy_path, processor, url, AgentLoopWorker)

    assert sorted(ours.batch.keys()) == sorted(verls.batch.keys())
    for key in verls.batch.keys():
        assert torch.equal(ours.batch[key], verls.batch[key]), key
    assert ours.batch["position_ids"].shape[1] == 4  # verl's text row plus the three M-RoPE axes

    inputs_ours = ours.non_tensor_batch["multi_modal_inputs"]
    inputs_verl = verls.non_tensor_batch["multi_modal_inputs"]
    for row in range(len(QUESTIONS)):
        assert_same_multi_modal_inputs(inputs_ours[row], inputs_verl[row])
    # Rows 0 and 2 saw page images; row 1 stayed text-only, where verl's processor pass yields nothing.
    assert [sorted(inputs_ours[row]) for row in range(3)] == [
        ["image_grid_thw", "images_seqlens", "pixel_values"],
        [],
        ["image_grid_thw", "images_seqlens", "pixel_values"],
    ]
    assert [kit.episode_of(ours, row).answer for row in range(3)] == ["12", "the board", "12"]


async def test_text_positions_match_verls_on_padded_rows(kit, policy_path, processor, static_search):
    url, _ = static_search(RESULTS)
    config = kit.make_config(policy_path, url)
    ours = build_agent_loop_worker(config, kit.ScriptedLLMClient(processor.tokenizer, []), processor=processor)
    verls = build_agent_loop_worker(
        config, kit.ScriptedLLMClient(processor.tokenizer, []), processor=processor, worker_class=AgentLoopWorker
    )
    input_ids = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9, 10, 0, 0]])
    attention_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]])
    mine, theirs = {"mm_token_type_ids": torch.zeros(1, 4)}, {"mm_token_type_ids": torch.zeros(1, 4)}
    expected = verls._compute_position_ids(input_ids, attention_mask, theirs)
    assert torch.equal(ours._compute_position_ids(input_ids, attention_mask, mine), expected)
    assert expected[0, :, 3:9].tolist() == [list(range(6))] * 4
    assert expected[0, 0, :3].tolist() == [1, 1, 1] and expected[0, 1:, :3].tolist() == [[0, 0, 0]] * 3
    assert mine == theirs == {}


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("tokens", [[], [7], [5, 6, 7, 8], list(range(3, 15))])
def test_padding_matches_verls_tokenizer_padding(kit, policy_path, processor, static_search, side, tokens):
    url, _ = static_search(RESULTS)
    config = kit.make_config(policy_path, url)
    workers = [
        build_agent_loop_worker(config, kit.ScriptedLLMClient(processor.tokenizer, []), processor, worker_class=cls)
        for cls in (UniDocAgentLoopWorker, AgentLoopWorker)
    ]
    for with_mask in (True, False):
        ours, verls = (
            worker._pad_token_ids(tokens, max_length=10, padding_side=side, return_attention_mask=with_mask)
            for worker in workers
        )
        assert sorted(ours) == sorted(verls)
        for key in verls:
            assert torch.equal(ours[key], verls[key]), (key, ours[key], verls[key])


async def test_a_reusable_agent_loop_is_built_once_per_worker(kit, policy_path, processor, static_search, monkeypatch):
    url, _ = static_search(RESULTS)
    built = []
    original = UniDocAgentLoopWorker._build_agent_loop

    def counting(self, agent_name):
        built.append(agent_name)
        return original(self, agent_name)

    monkeypatch.setattr(UniDocAgentLoopWorker, "_build_agent_loop", counting)
    _, worker = await rollout(kit, policy_path, processor, url, UniDocAgentLoopWorker)
    batch = kit.question_batch(QUESTIONS)
    batch.meta_info["validate"] = False
    await worker.generate_sequences(batch)
    assert built == ["unidoc_agent"]


@register("unidoc_test_stateful")
class StatefulLoop(AgentLoopBase):
    """Keeps a per-episode counter on the instance, so it must get a fresh instance per trajectory."""

    def __init__(self, *args, tools=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.episodes = 0

    async def run(self, sampling_params, **kwargs) -> AgentLoopOutput:
        self.episodes += 1
        prompt_ids = self.tokenizer.encode("question")
        answer = self.tokenizer.encode(str(self.episodes))
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=answer,
            response_mask=[1] * len(answer),
            response_logprobs=[0.0] * len(answer),
            num_turns=2,
            metrics={},
        )


async def test_agent_loops_without_the_reusable_flag_get_one_instance_per_trajectory(
    kit, policy_path, processor, static_search
):
    url, _ = static_search(RESULTS)
    config = kit.make_config(policy_path, url)
    worker = build_agent_loop_worker(config, kit.ScriptedLLMClient(processor.tokenizer, []), processor=processor)
    batch = kit.question_batch(["a", "b", "c"])
    batch.non_tensor_batch["agent_name"] = np.array(["unidoc_test_stateful"] * 3, dtype=object)
    batch.meta_info["validate"] = False
    output = await worker.generate_sequences(batch)
    responses = [kit.unpadded(output, row)["response"] for row in range(3)]
    assert responses == [processor.tokenizer.encode("1")] * 3
    assert getattr(StatefulLoop, "reusable", False) is False and UniDocAgentLoop.reusable is True


async def test_a_group_renders_its_shared_prompt_once(kit, policy_path, processor, static_search, monkeypatch):
    url, _ = static_search(RESULTS)
    rendered = []
    original = UniDocAgentLoop.ct_build_initial_tokens

    async def counting(self, messages, *args, **kwargs):
        rendered.append(messages[-1]["content"])
        return await original(self, messages, *args, **kwargs)

    monkeypatch.setattr(UniDocAgentLoop, "ct_build_initial_tokens", counting)
    output, _ = await rollout(kit, policy_path, processor, url, UniDocAgentLoopWorker)
    assert len(rendered) == 2 and sum("revenue" in text for text in rendered) == 1
    prompts = [kit.unpadded(output, row)["prompt"] for row in range(3)]
    assert prompts[0] == prompts[2] != prompts[1]


async def test_a_failed_prompt_render_is_not_cached(kit, policy_path, processor, static_search, monkeypatch):
    url, _ = static_search(RESULTS)
    original = UniDocAgentLoop.ct_build_initial_tokens
    failures = iter([True])

    async def flaky(self, messages, *args, **kwargs):
        if next(failures, False):
            raise RuntimeError("tokenizer hiccup")
        return await original(self, messages, *args, **kwargs)

    monkeypatch.setattr(UniDocAgentLoop, "ct_build_initial_tokens", flaky)
    client = kit.ScriptedLLMClient(processor.tokenizer, script_for(processor.tokenizer))
    worker = build_agent_loop_worker(kit.make_config(policy_path, url), client, processor=processor)
    batch = kit.question_batch(QUESTIONS[1:2])
    batch.meta_info["validate"] = False
    with pytest.raises(RuntimeError, match="tokenizer hiccup"):
        await worker.generate_sequences(batch)
    output = await worker.generate_sequences(kit.question_batch(QUESTIONS[1:2]))
    assert kit.episode_of(output).answer == "the board"
