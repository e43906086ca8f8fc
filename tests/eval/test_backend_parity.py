"""The same policy through the local backend and through the OpenAI-compatible endpoint gives identical episodes."""

from __future__ import annotations

import pytest

from unidoc_rl.engine.openai_policy import OpenAIPolicyClient, PolicyRequestError, image_token_id
from unidoc_rl.eval.__main__ import compose_eval_config, reward_settings
from unidoc_rl.eval.runner import Evaluator
from unidoc_rl.eval.samples import load_eval_samples
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.standins.eval_policies import plan_policy
from unidoc_rl.standins.policy_server import PolicyServer
from unidoc_rl.standins.scripted_client import ScriptedLLMClient

OVERRIDES = ["unidoc_agent.max_turns=6", "unidoc_agent.max_tokens_per_turn=160", "unidoc_agent.search_top_k=5"]


async def run_all(world, processor, tiny_policy_dir, client, overrides=OVERRIDES, limit=None, tmp_path=None):
    config = compose_eval_config(str(tiny_policy_dir), overrides, "local_cpu")
    scorer = EpisodeScorer(reward_settings(config, world.judge.base_url, None, None))
    evaluator = Evaluator(config, client, processor, scorer, {"*": world.search.url})
    samples = load_eval_samples([world.samples_path])[:limit]
    try:
        return [await evaluator.episode(sample, 0) for sample in samples]
    finally:
        await evaluator.aclose()


def comparable(result: dict) -> dict:
    return {key: value for key, value in result.items() if key != "latency_s"}


async def test_scripted_policy_parity(world, processor, tiny_policy_dir, kit):
    plans = kit.oracle_plans(world, processor)
    local = await run_all(
        world,
        processor,
        tiny_policy_dir,
        ScriptedLLMClient(processor.tokenizer, plan_policy(processor.tokenizer, plans)),
    )
    served_client = ScriptedLLMClient(processor.tokenizer, plan_policy(processor.tokenizer, plans))
    with PolicyServer(served_client, processor) as server:
        client = OpenAIPolicyClient(server.base_url, "scripted", image_token_id=image_token_id(processor))
        remote = await run_all(world, processor, tiny_policy_dir, client)
    # Every turn re-sends the images shown so far; the server rendered each at most once.
    last_images = {call.request_id: len(call.images) for call in served_client.calls}
    assert 0 < server.renders <= sum(last_images.values()) < sum(len(call.images) for call in served_client.calls)
    assert [comparable(r) for r in remote] == [comparable(r) for r in local]
    crop = next(r for r in local if r["uid"] == "v1")["episode"]["searches"][0]["crops"]
    assert len(crop) == 1 and crop[0]["page_id"] == "guide_1"
    assert crop[0]["boxes_norm1000"][0] == pytest.approx((100.0, 150.0, 700.0, 450.0), abs=5)
    # The served policy saw the very same pixels: every image of every call arrived intact over HTTP.
    assert sum(len(call.images) for call in served_client.calls) > 0


async def test_tiny_policy_greedy_parity_local_engine_vs_served(world, processor, tiny_policy_dir):
    from unidoc_rl.engine.local_engine import LocalEngine

    overrides = ["unidoc_agent.max_turns=2", "unidoc_agent.max_tokens_per_turn=12"]
    local = await run_all(
        world, processor, tiny_policy_dir, LocalEngine.from_pretrained(tiny_policy_dir, max_batch_size=1), overrides, 2
    )
    with PolicyServer(LocalEngine.from_pretrained(tiny_policy_dir, max_batch_size=1), processor) as server:
        client = OpenAIPolicyClient(server.base_url, "tiny", image_token_id=image_token_id(processor))
        remote = await run_all(world, processor, tiny_policy_dir, client, overrides, 2)
    assert [comparable(r) for r in remote] == [comparable(r) for r in local]
    assert all(r["episode"]["num_turns"] >= 1 and r["tokens"]["model"] > 0 for r in local)


async def test_a_server_without_the_generate_endpoint_is_refused(world):
    from unidoc_rl.standins.scripted_llm_server import Reply, ScriptedLLMServer

    with ScriptedLLMServer(Reply(content="x")) as server:
        # A chat-completions-only server has no token-in/token-out route: a clear 4xx error, no re-tokenized text.
        client = OpenAIPolicyClient(server.base_url, "m", image_token_id=99, max_retries=0)
        with pytest.raises(PolicyRequestError, match="HTTP 40"):
            await client.generate("r", prompt_ids=[1, 2], sampling_params={"max_tokens": 4})
        await client.aclose()


async def test_evaluation_worker_runs_the_same_episodes_as_the_training_worker(world, processor, tiny_policy_dir, kit):
    import numpy as np
    from omegaconf import OmegaConf
    from verl.protocol import DataProto

    from unidoc_rl.agent.verl_worker import UniDocAgentLoopWorker, build_agent_loop_worker
    from unidoc_rl.env.prompts import load_prompts
    from unidoc_rl.eval.worker import EvaluationWorker

    config = compose_eval_config(str(tiny_policy_dir), OVERRIDES, "local_cpu")
    OmegaConf.update(config, "unidoc_agent.search_url", world.search.url)
    plans = kit.oracle_plans(world, processor)
    queries = [entry["query"] for entry in world.samples]
    outputs = []
    for worker_class in (UniDocAgentLoopWorker, EvaluationWorker):
        client = ScriptedLLMClient(processor.tokenizer, plan_policy(processor.tokenizer, plans))
        worker = build_agent_loop_worker(config, client, processor=processor, worker_class=worker_class)
        batch = DataProto.from_single_dict(
            {
                "raw_prompt": np.array([[load_prompts().question_message(q)] for q in queries], dtype=object),
                "agent_name": np.array(["unidoc_agent"] * len(queries), dtype=object),
                "extra_info": np.array([{"uid": str(i)} for i in range(len(queries))], dtype=object),
            }
        )
        batch.meta_info["validate"] = True
        outputs.append(await worker.generate_sequences(batch))
    trained, evaluated = outputs
    assert list(trained.non_tensor_batch["episode"]) == list(evaluated.non_tensor_batch["episode"])
    for name in ("responses", "response_mask", "attention_mask", "prompts"):
        assert bool((trained.batch[name] == evaluated.batch[name]).all()), name
    assert "multi_modal_inputs" not in evaluated.non_tensor_batch or not any(
        evaluated.non_tensor_batch["multi_modal_inputs"]
    )
