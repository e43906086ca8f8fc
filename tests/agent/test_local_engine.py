"""The transformers-backed engine: verl's generate seam on CPU, with exact log-probs and batching."""

from __future__ import annotations

import asyncio

import pytest
import torch
from PIL import Image

from unidoc_rl.engine.local_engine import LocalEngine
from unidoc_rl.env.vision import PixelBudget, to_display

BUDGET = PixelBudget(8 * 28 * 28, 64 * 28 * 28)


@pytest.fixture(scope="module")
def engine(policy_path):
    return LocalEngine.from_pretrained(policy_path, seed=0)


def render(engine, question: str, images: list[Image.Image]) -> list[int]:
    content = [{"type": "text", "text": question}] + [{"type": "image", "image": image} for image in images]
    text = engine.processor.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
    )
    return engine.processor(text=[text], images=images or None, return_tensors="pt")["input_ids"][0].tolist()


def teacher_forced_log_probs(engine, prompt_ids, images, generated, temperature=1.0) -> torch.Tensor:
    ids = torch.tensor([prompt_ids + generated])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs["mm_token_type_ids"] = (ids == engine.model.config.image_token_id).long()
    if images:
        features = engine.processor.image_processor(images=images, return_tensors="pt")
        inputs.update(pixel_values=features["pixel_values"], image_grid_thw=features["image_grid_thw"])
    with torch.no_grad():
        logits = engine.model(**inputs).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(generated)[:, None]).squeeze(-1)


async def test_batched_generation_log_probs_equal_teacher_forcing(engine, pages):
    images = [to_display(pages["report_1"], BUDGET), to_display(pages["report_2"], BUDGET)]
    prompts = [
        (render(engine, "Which page shows the revenue table?", images), images),
        (render(engine, "Summarize.", images[:1]), images[:1]),
        (render(engine, "What is the total?", []), []),
    ]
    params = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 12, "logprobs": True}
    engine.batches_run.clear()
    outputs = await asyncio.gather(
        *(
            engine.generate(f"r{i}", prompt_ids=ids, sampling_params=params, image_data=imgs or None)
            for i, (ids, imgs) in enumerate(prompts)
        )
    )
    assert engine.batches_run == [3]  # the three waiting trajectories were generated together (left-padded)
    for (ids, imgs), output in zip(prompts, outputs, strict=True):
        assert 1 <= len(output.token_ids) <= 12 and len(output.log_probs) == len(output.token_ids)
        expected = teacher_forced_log_probs(engine, ids, imgs, output.token_ids, temperature=0.7)
        assert torch.allclose(torch.tensor(output.log_probs), expected, atol=1e-4)


async def test_greedy_is_deterministic_and_stops_at_stop_strings_and_max_tokens(engine):
    ids = render(engine, "Find the revenue.", [])
    greedy = {"temperature": 0, "max_tokens": 16, "logprobs": True}
    first = await engine.generate("a", prompt_ids=ids, sampling_params=greedy)
    second = await engine.generate("b", prompt_ids=ids, sampling_params=greedy)
    assert first.token_ids == second.token_ids
    assert torch.allclose(
        torch.tensor(first.log_probs), teacher_forced_log_probs(engine, ids, [], first.token_ids), atol=1e-4
    )
    tokens = first.token_ids
    assert not set(tokens[:8]) & engine.eos_ids, "the tiny model ended early; pick another prompt"
    decode = engine.tokenizer.decode
    stop = decode(tokens[:6])[-3:]  # text that first appears with the 6th token
    assert stop not in decode(tokens[:5])
    stopped = await engine.generate("c", prompt_ids=ids, sampling_params={**greedy, "stop": [stop]})
    assert stopped.token_ids == tokens[:6]
    short = await engine.generate("d", prompt_ids=ids, sampling_params={**greedy, "max_tokens": 3, "logprobs": False})
    assert short.token_ids == tokens[:3] and short.log_probs is None


async def test_logit_bias_bans_and_forces_tokens(engine):
    ids = render(engine, "Find the revenue.", [])
    greedy = {"temperature": 0, "max_tokens": 4, "logprobs": True}
    plain = (await engine.generate("a", prompt_ids=ids, sampling_params=greedy)).token_ids
    banned = await engine.generate("b", prompt_ids=ids, sampling_params={**greedy, "logit_bias": {plain[0]: -100.0}})
    assert banned.token_ids[0] != plain[0]
    forced_token = 300
    forced = await engine.generate("c", prompt_ids=ids, sampling_params={**greedy, "logit_bias": {forced_token: 100}})
    assert forced.token_ids == [forced_token] * 4
    # Reported log-probs stay those of the model's own distribution, as with vLLM's raw log-probs.
    expected = teacher_forced_log_probs(engine, ids, [], forced.token_ids)
    assert torch.allclose(torch.tensor(forced.log_probs), expected, atol=1e-4)


async def test_image_token_mismatch_is_a_clear_error(engine, pages):
    image = to_display(pages["report_1"], BUDGET)
    ids = render(engine, "Look.", [image])
    with pytest.raises(ValueError, match="image tokens"):
        await engine.generate("x", prompt_ids=ids, sampling_params={"max_tokens": 2}, image_data=[image, image])
    with pytest.raises(ValueError, match="max_model_len"):
        await engine.generate("y", prompt_ids=[1] * engine.max_model_len, sampling_params={"max_tokens": 2})
