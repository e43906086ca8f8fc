"""The agent loop through verl's real AgentLoopWorker, in-process, with the tiny policy's processor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as qwen_smart_resize

from unidoc_rl.env import prompts
from unidoc_rl.env.actions import STOP_STRINGS
from unidoc_rl.env.episode import ActionKind, FinishReason

QUESTION = "What is the revenue?"
RESULTS = {"revenue": ["report_2", "report_1", "report_3", "report_4"], "costs": ["report_1", "report_5"]}
EPISODE = [
    "<think>I should search.</think><search>revenue</search>",
    "<select>1</select>",
    "<bbox>[10, 20, 100, 120]</bbox>",
    "<answer>42 million</answer>",
]
MIN_PIXELS, MAX_PIXELS = 8 * 28 * 28, 64 * 28 * 28  # the tiny policy's processor budget


def expected_display_size(raw_size):
    height, width = qwen_smart_resize(raw_size[1], raw_size[0], 28, MIN_PIXELS, MAX_PIXELS)
    return width, height


def expected_crop(page: Image.Image, box):
    """Crop-and-zoom computed independently of unidoc_rl.env.vision."""
    display_w, display_h = expected_display_size(page.size)
    sx, sy = page.width / display_w, page.height / display_h
    raw = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    region = page.crop((math.floor(raw[0]), math.floor(raw[1]), math.ceil(raw[2]), math.ceil(raw[3])))
    scale = math.sqrt(MAX_PIXELS / (region.width * region.height))
    height, width = qwen_smart_resize(
        round(region.height * scale), round(region.width * scale), 28, MIN_PIXELS, MAX_PIXELS
    )
    return region.resize((width, height), Image.Resampling.BICUBIC), raw


async def run(kit, policy_path, processor, static_search, script, validate=False, questions=(QUESTION,), **agent):
    url, backend = static_search(RESULTS)
    client = kit.ScriptedLLMClient(processor.tokenizer, script)
    config = kit.make_config(policy_path, url, **agent)
    output = await kit.run_worker(config, client, kit.question_batch(list(questions)), processor, validate=validate)
    return output, client, backend


def image_token_count(image: Image.Image) -> int:
    return (image.width // 14) * (image.height // 14) // 4


async def test_search_select_crop_answer_is_token_exact(kit, policy_path, processor, static_search, pages):
    output, client, backend = await run(kit, policy_path, processor, static_search, EPISODE)
    row = kit.unpadded(output)
    tokenizer = processor.tokenizer
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    full = row["prompt"] + row["response"]

    # The record the reward reads.
    episode = kit.episode_of(output)
    display = expected_display_size(pages["report_1"].size)
    crop, raw_box = expected_crop(pages["report_1"], (10, 20, 100, 120))
    assert backend.queries == ["revenue"]
    assert episode.uid == "q0"
    assert [step.query for step in episode.searches] == ["revenue"]
    assert episode.searches[0].retrieved == ["report_2", "report_1", "report_3", "report_4"]
    assert episode.searches[0].candidates == ["report_2", "report_1", "report_3"]
    assert episode.searches[0].selected == "report_1"
    assert episode.shown_page_ids == ["report_2", "report_1", "report_3"]
    assert episode.actions == [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER]
    assert episode.answer == "42 million"
    assert episode.finish_reason is FinishReason.ANSWERED
    assert episode.num_turns == 4 and episode.invalid_actions == 0
    (crop_step,) = episode.crops
    assert crop_step.page_id == "report_1"
    assert crop_step.boxes_display == [(10.0, 20.0, 100.0, 120.0)]
    expected_norm = tuple(v * 1000 / s for v, s in zip(raw_box, pages["report_1"].size * 2, strict=True))
    assert crop_step.boxes_norm1000[0] == pytest.approx(expected_norm)

    # Each generate call got the sequence so far (a prefix of the final one) and every image shown so far.
    final_images = client.calls[-1].images
    assert [len(call.images) for call in client.calls] == [0, 3, 4, 5]
    for call in client.calls:
        assert full[: len(call.prompt_ids)] == call.prompt_ids
        assert all(a is b for a, b in zip(call.images, final_images, strict=False))
        assert call.prompt_ids.count(image_pad) == sum(image_token_count(image) for image in call.images)
        assert call.sampling_params["stop"] == list(STOP_STRINGS)
        assert call.sampling_params["logit_bias"] == {image_pad: -100.0, video_pad: -100.0}
    assert [image.size for image in final_images[:4]] == [display] * 4
    assert np.array_equal(np.asarray(final_images[0]), np.asarray(pages["report_2"].resize(display, Image.BICUBIC)))
    assert final_images[3] is final_images[1]  # the selected page is Image 1, shown again alone
    assert np.array_equal(np.asarray(final_images[4]), np.asarray(crop))

    # Masks: 1 exactly on the ids the engine returned, 0 on everything else (closing <|im_end|>, observations).
    expected_mask = []
    starts = [len(call.prompt_ids) - len(row["prompt"]) for call in client.calls] + [len(row["response"])]
    for call, start, end in zip(client.calls, starts, starts[1:], strict=False):
        assert len(expected_mask) == start
        assert row["response"][start : start + len(call.reply_ids)] == call.reply_ids
        expected_mask += [1] * len(call.reply_ids) + [0] * (end - start - len(call.reply_ids))
    assert row["mask"] == expected_mask
    assert row["logprobs"] == [-0.25 if bit else 0.0 for bit in expected_mask]
    assert all(bit == 0 for token, bit in zip(row["response"], row["mask"], strict=True) if token == image_pad)
    assert row["response"][-1] == im_end and row["mask"][-1] == 0

    # The whole sequence equals a from-scratch render of the conversation with all its images.
    messages = prompts.load_prompts().prompt_messages(QUESTION)
    observations = [
        prompts.load_prompts().search_results("revenue", final_images[:3]),
        prompts.load_prompts().selected_page(1, final_images[3]),
        prompts.load_prompts().cropped_region(final_images[4]),
    ]
    for reply, observation in zip(EPISODE, [*observations, None], strict=True):
        messages.append({"role": "assistant", "content": reply})
        if observation:
            messages.append(observation)
    text = processor.apply_chat_template(messages, tokenize=False)
    rendered = processor(text=[text], images=final_images, return_tensors="pt")["input_ids"][0].tolist()
    assert full == rendered[: len(full)] and rendered[len(full) :] == tokenizer.encode("\n")

    # Multimodal inputs and M-RoPE position ids in the shapes verl's trainer expects.
    inputs = output.non_tensor_batch["multi_modal_inputs"][0]
    grid = torch.tensor([[1, image.height // 14, image.width // 14] for image in final_images])
    assert torch.equal(inputs["image_grid_thw"], grid)
    assert inputs["pixel_values"].shape == (int(grid.prod(dim=1).sum()), 1176)
    width = output.batch["input_ids"].shape[1]
    assert output.batch["position_ids"].shape == (1, 4, width)
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(policy_path)
    input_ids = torch.tensor([full])
    rope, _ = model.model.get_rope_index(
        input_ids,
        image_grid_thw=grid,
        attention_mask=torch.ones_like(input_ids),
        mm_token_type_ids=(input_ids == image_pad).long(),
    )
    valid = output.batch["attention_mask"][0].bool()
    assert torch.equal(output.batch["position_ids"][0, 1:, valid], rope[:, 0])
    assert torch.equal(output.batch["position_ids"][0, 0, valid], torch.arange(len(full)))
    assert not torch.equal(rope[0, 0], torch.arange(len(full)))  # images really get 3-D positions
    assert int(output.non_tensor_batch["__num_turns__"][0]) == 4 + 3 + 1


async def test_invalid_actions_get_error_observations(kit, policy_path, processor, static_search):
    script = [
        "I think the answer is in a table.",
        "<select>0</select>",
        "<bbox>[1, 2, 30, 40]</bbox>",
        "<search>revenue</search>",
        "<select>7</select>",
        "<bbox>[50, 50, 10, 10]</bbox>",
        "<select>two</select>",
        "<answer>done</answer>",
    ]
    output, client, _ = await run(kit, policy_path, processor, static_search, script)
    episode = kit.episode_of(output)
    assert episode.invalid_reasons == [
        "no_action",
        "no_candidates",
        "no_focus_page",
        "index_out_of_range",
        "degenerate_box",
        "bad_index",
    ]
    assert episode.actions == [ActionKind.INVALID] * 3 + [ActionKind.SEARCH] + [ActionKind.INVALID] * 3 + [
        ActionKind.ANSWER
    ]
    assert episode.invalid_actions == 6 and episode.finish_reason is FinishReason.ANSWERED
    assert episode.searches[0].selected is None and episode.crops == []
    row = kit.unpadded(output)
    tokenizer = processor.tokenizer
    # Each error observation is a masked user turn right after the offending turn.
    for call, following in zip(client.calls, client.calls[1:], strict=False):
        start = len(call.prompt_ids) + len(call.reply_ids) - len(row["prompt"])
        end = len(following.prompt_ids) - len(row["prompt"])
        assert set(row["mask"][start:end]) == {0}
        observation = tokenizer.decode(row["response"][start:end])
        assert observation.startswith("<|im_end|>\n<|im_start|>user\n")
        assert observation.endswith("<|im_end|>\n<|im_start|>assistant\n")
    decoded = tokenizer.decode(row["response"])
    assert (
        "Invalid action (no_action)" in decoded
        and "Invalid action (index_out_of_range): index 7 is not in 0..2" in decoded
    )
    assert [len(call.images) for call in client.calls] == [0, 0, 0, 0, 3, 3, 3, 3]


async def test_turn_budget_ends_the_episode(kit, policy_path, processor, static_search):
    script = ["<search>revenue</search>", "<search>costs</search>", "<search>nothing</search>"]
    output, client, _ = await run(kit, policy_path, processor, static_search, script, max_turns=3)
    episode = kit.episode_of(output)
    assert episode.finish_reason is FinishReason.MAX_TURNS and episode.answer is None
    assert len(client.calls) == 3 and episode.num_turns == 3
    # The last search is an action (format counts it) but the model never saw its results: no step, no pages.
    assert episode.actions == [ActionKind.SEARCH] * 3
    assert [step.candidates for step in episode.searches] == [["report_2", "report_1", "report_3"], ["report_5"]]
    assert episode.shown_page_ids == ["report_2", "report_1", "report_3", "report_5"]
    last_prompt = processor.tokenizer.decode(client.calls[2].prompt_ids)
    assert last_prompt.endswith(prompts.load_prompts().last_turn_note + "<|im_end|>\n<|im_start|>assistant\n")
    assert prompts.load_prompts().last_turn_note not in processor.tokenizer.decode(client.calls[1].prompt_ids)
    # No turn would read the last search's results: the sequence ends with the last action.
    row = kit.unpadded(output)
    assert processor.tokenizer.decode(row["response"]).endswith("<search>nothing</search><|im_end|>")
    assert row["mask"][-1] == 0 and row["mask"][-2] == 1


async def test_image_budget_forces_a_final_answer(kit, policy_path, processor, static_search):
    script = ["<search>revenue</search>", "<select>2</select>", "<bbox>[0, 0, 50, 50]</bbox>", "<answer>7</answer>"]
    output, client, _ = await run(kit, policy_path, processor, static_search, script, max_images=4)
    episode = kit.episode_of(output)
    assert episode.finish_reason is FinishReason.MAX_IMAGES
    assert episode.answer == "7"
    assert episode.actions == [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER]
    assert episode.crops == []  # the crop was never shown
    assert [len(call.images) for call in client.calls] == [0, 3, 4, 4]
    assert "Budget reached (max_images)" in processor.tokenizer.decode(client.calls[3].prompt_ids)


async def test_context_budget_ends_before_an_observation_that_does_not_fit(kit, policy_path, processor, static_search):
    script = ["<search>revenue</search>", "<answer>never asked</answer>"]
    output, client, _ = await run(
        kit, policy_path, processor, static_search, script, response_length=120, force_final_answer=False
    )
    episode = kit.episode_of(output)
    assert episode.finish_reason is FinishReason.MAX_MODEL_LEN
    assert episode.actions == [ActionKind.SEARCH] and episode.searches == [] and episode.shown_page_ids == []
    assert len(client.calls) == 1
    row = kit.unpadded(output)
    assert len(row["response"]) <= 120 and "multi_modal_inputs" in output.non_tensor_batch


async def test_search_failure_is_an_observation(kit, policy_path, processor, static_search, pages):
    class BrokenSearch:
        async def search(self, queries, top_k=None):
            raise ConnectionError("search service unreachable")

        async def load_image(self, hit):
            raise AssertionError("never called")

    url, _ = static_search({}, backend=BrokenSearch())
    client = kit.ScriptedLLMClient(processor.tokenizer, ["<search>revenue</search>", "<answer>unknown</answer>"])
    config = kit.make_config(policy_path, url)
    output = await kit.run_worker(config, client, kit.question_batch([QUESTION]), processor)
    episode = kit.episode_of(output)
    assert episode.finish_reason is FinishReason.ANSWERED and episode.answer == "unknown"
    assert [(s.query, s.retrieved, s.candidates, s.failed) for s in episode.searches] == [("revenue", [], [], True)]
    assert episode.searches[0].error == "ConnectionError: search service unreachable"
    assert output.non_tensor_batch["agent_metrics"][0]["search_errors"] == 1
    assert "Search failed (ConnectionError: search service unreachable)" in processor.tokenizer.decode(
        client.calls[1].prompt_ids
    )


async def test_training_and_validation_follow_the_same_rules(kit, policy_path, processor, static_search):
    def script(call):
        question = processor.tokenizer.decode(call.prompt_ids)
        replies = EPISODE if "revenue" in question else ["<search>costs</search>", "<answer>3</answer>"]
        return replies[call.turn]

    questions = (QUESTION, "What are the costs?")
    results = {}
    for validate in (False, True):
        output, client, _ = await run(
            kit, policy_path, processor, static_search, script, validate=validate, questions=questions
        )
        results[validate] = (output, client)
    (train, train_client), (val, val_client) = results[False], results[True]
    for key in ("input_ids", "response_mask", "position_ids", "attention_mask"):
        assert torch.equal(train.batch[key], val.batch[key])
    assert list(train.non_tensor_batch["episode"]) == list(val.non_tensor_batch["episode"])
    assert [kit.episode_of(train, row).answer for row in range(2)] == ["42 million", "3"]
    train_params = {k: v for c in train_client.calls for k, v in c.sampling_params.items()}
    val_params = {k: v for c in val_client.calls for k, v in c.sampling_params.items()}
    assert train_params["temperature"] == 1.0 and val_params["temperature"] == 0
    for key in ("stop", "include_stop_str_in_output", "logprobs"):
        assert train_params[key] == val_params[key]
