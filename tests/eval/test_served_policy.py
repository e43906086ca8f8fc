"""The served-policy client against the loopback stand-in of `vllm serve`'s render and generate endpoints: images
reach the engine at their placeholder runs, each rendered once; a server that drops or miscounts images, or
counts another prompt, is an error naming the cause, never a blind result."""

from __future__ import annotations

import gc
import json

import numpy as np
import pytest
from PIL import Image
from verl.workers.rollout.replica import TokenOutput

from unidoc_rl.engine.openai_policy import OpenAIPolicyClient, PolicyRequestError, image_token_id
from unidoc_rl.engine.served_protocol import parse_generation, parse_render, placeholder_runs
from unidoc_rl.standins.policy_server import Fault, PolicyServer
from unidoc_rl.standins.scripted_client import ScriptedLLMClient

SIZES = [(112, 84), (84, 140), (140, 112)]
"""Display-stable sizes under the tiny policy's pixel budget: 12, 15 and 20 placeholder tokens."""


def page(size, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def prompt_with(processor, images) -> list[int]:
    """Text, then each image as vision-start, its run of pad ids, vision-end (as the agent loop renders it)."""
    tokenizer = processor.tokenizer
    start, end = (tokenizer.convert_tokens_to_ids(name) for name in ("<|vision_start|>", "<|vision_end|>"))
    ids = [5, 6, 7]
    for image in images:
        ids += [start] + [image_token_id(processor)] * (image.width // 28 * image.height // 28) + [end, 9]
    return ids


def client_for(server, processor, **options) -> OpenAIPolicyClient:
    return OpenAIPolicyClient(server.base_url, "m", image_token_id=image_token_id(processor), **options)


def test_placeholder_runs():
    assert placeholder_runs([3, 3, 1, 3, 2, 3, 3, 3], 3) == [(0, 2), (3, 1), (5, 3)]
    assert placeholder_runs([1, 2], 3) == []


class FlakyEngine:
    """Fails its first call (the server answers 500), then replies with fixed token ids."""

    def __init__(self):
        self.calls = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs):
        self.calls.append((request_id, prompt_ids, sampling_params))
        if len(self.calls) == 1:
            raise RuntimeError("engine restarting")
        return TokenOutput(token_ids=[5, 6, 7], log_probs=[-0.5, -0.25, -0.125], stop_reason="completed")


async def test_policy_client_retries_a_server_error_and_keeps_token_ids(processor):
    engine = FlakyEngine()
    with PolicyServer(engine, processor) as server:
        client = client_for(server, processor, backoff_s=0.01)
        params = {"max_tokens": 9, "temperature": 0, "stop": ["</answer>"], "logprobs": True, "logit_bias": {3: -100}}
        output = await client.generate("traj-1", prompt_ids=[1, 2, 3], sampling_params=params)
        await client.aclose()
    assert (output.token_ids, output.log_probs) == ([5, 6, 7], [-0.5, -0.25, -0.125])
    request_id, prompt_ids, sent = engine.calls[-1]
    assert (request_id, prompt_ids, len(engine.calls)) == ("traj-1", [1, 2, 3], 2)
    assert sent["stop"] == ["</answer>"] and sent["logit_bias"] == {3: -100.0} and sent["max_tokens"] == 9


async def test_images_reach_the_engine_at_their_placeholder_runs_and_are_rendered_once(processor):
    engine = ScriptedLLMClient(processor.tokenizer, ["<answer>a</answer>", "<answer>b</answer>"])
    images = [page(size, seed) for seed, size in enumerate(SIZES)]
    with PolicyServer(engine, processor) as server:
        client = client_for(server, processor)
        for turn in (2, 3):  # the second turn re-sends the first two images and adds the third
            prompt = prompt_with(processor, images[:turn])
            await client.generate("t", prompt_ids=prompt, sampling_params={"max_tokens": 8}, image_data=images[:turn])
            assert engine.calls[-1].prompt_ids == prompt
        assert server.renders == 3 and server.requests == 2
        for call in engine.calls:
            received = [np.asarray(image) for image in call.images]
            assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(received, images, strict=False))
            assert len(received) == len(placeholder_runs(call.prompt_ids, image_token_id(processor)))
        # Rendered features live as long as their image.
        assert len(client._rendered) == 3
        del images, call
        engine.calls.clear()
        gc.collect()
        assert client._rendered == {}
        await client.aclose()


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (Fault.NO_FEATURES, "rendered the image without multimodal features"),
        (
            Fault.PLACEHOLDER_LENGTH,
            "image 0: the server expands it to 16 placeholder tokens, the agent loop's prompt holds 15",
        ),
        (Fault.PROMPT_TOKENS, "the server counted {counted} prompt tokens, {sent} were sent"),
    ],
)
async def test_a_server_that_drops_or_miscounts_images_is_an_error(processor, fault, cause):
    engine = ScriptedLLMClient(processor.tokenizer, ["<answer>a</answer>"])
    images = [page((84, 140), 1), page((84, 140), 2)]
    with PolicyServer(engine, processor, fault=fault) as server:
        client = client_for(server, processor, max_retries=0)
        prompt = prompt_with(processor, images)
        with pytest.raises(PolicyRequestError, match=cause.format(counted=len(prompt) + 1, sent=len(prompt))):
            await client.generate("t", prompt_ids=prompt, sampling_params={"max_tokens": 8}, image_data=images)
        await client.aclose()
    # A bad render stops the turn before anything is generated.
    assert len(engine.calls) == (1 if fault is Fault.PROMPT_TOKENS else 0)


async def test_images_and_placeholder_runs_that_disagree_are_refused_before_generation(processor):
    engine = ScriptedLLMClient(processor.tokenizer, ["x"])
    images = [page(SIZES[0], 0), page(SIZES[1], 1)]
    with PolicyServer(engine, processor) as server:
        client = client_for(server, processor)
        for prompt, given, message in (
            (prompt_with(processor, images[:1]), images, "holds 1 image placeholder run"),
            (prompt_with(processor, images), images[:1], "holds 2 image placeholder run"),
            (prompt_with(processor, images[::-1]), images, "image 0: the server expands it to 12 placeholder tokens"),
        ):
            with pytest.raises(PolicyRequestError, match=message):
                await client.generate("t", prompt_ids=prompt, sampling_params={"max_tokens": 4}, image_data=given)
        assert server.requests == 0
        await client.aclose()


def test_replies_are_checked():
    reply = {
        "choices": [{"token_ids": [4, 5], "logprobs": {"content": [{"logprob": -1.0}, {"logprob": -2.0}]}}],
        "usage": {"prompt_tokens": 3},
    }
    assert parse_generation(reply, 3, want_logprobs=True) == ([4, 5], [-1.0, -2.0])
    with pytest.raises(PolicyRequestError, match="no token ids"):
        parse_generation({"choices": [{"text": "<answer>x</answer>"}], "usage": {"prompt_tokens": 3}}, 3, False)
    with pytest.raises(PolicyRequestError, match="counted None prompt tokens, 3 were sent"):
        parse_generation({"choices": reply["choices"]}, 3, False)
    short = {**reply, "choices": [{"token_ids": [4, 5], "logprobs": {"content": [{"logprob": -1.0}]}}]}
    with pytest.raises(PolicyRequestError, match="do not align"):
        parse_generation(short, 3, want_logprobs=True)
    features = {
        "mm_hashes": {"image": ["h"]},
        "mm_placeholders": {"image": [{"offset": 1, "length": 2}]},
        "kwargs_data": {"image": ["AAAA"]},
    }
    assert parse_render({"token_ids": [0, 9, 9, 1], "features": features}, 9).length == 2
    with pytest.raises(PolicyRequestError, match="not a run of token 8"):
        parse_render({"token_ids": [0, 9, 9, 1], "features": features}, 8)
    with pytest.raises(PolicyRequestError, match="no pixel data"):
        parse_render({"token_ids": [0, 9, 9], "features": {**features, "kwargs_data": {"image": [None]}}}, 9)


def test_evaluation_records_each_episode_a_lying_server_ruined(world, processor, tiny_policy_dir, kit, tmp_path):
    from unidoc_rl.eval.__main__ import main
    from unidoc_rl.standins.eval_policies import plan_policy

    engine = ScriptedLLMClient(
        processor.tokenizer, plan_policy(processor.tokenizer, kit.oracle_plans(world, processor))
    )
    with PolicyServer(engine, processor, fault=Fault.NO_FEATURES) as server:
        with pytest.raises(SystemExit) as exit_info:
            main(kit.eval_argv(world, server.base_url, tiny_policy_dir, tmp_path))
    assert exit_info.value.code == 1
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == len(world.samples)
    assert all("rendered the image without multimodal features" in error["error"] for error in errors)
    assert not (tmp_path / "results.jsonl").read_text().strip()
    # Only the first (text-only) turn of each episode was generated: nothing was generated without its pages.
    assert len(engine.calls) == len(world.samples) and not any(call.images for call in engine.calls)
