"""Episode rules through verl's real AgentLoopWorker: forced answers, the closing-tag grammar, what the record holds
after each budget, prompt/settings agreement, box frames, and robustness to any model output and any page."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from unidoc_rl.agent.agent_loop import PromptMismatchError
from unidoc_rl.agent.search import StaticSearchBackend, register_inprocess_backend, unregister_inprocess_backend
from unidoc_rl.env.actions import CLOSING_FORMS
from unidoc_rl.env.episode import ActionKind, FinishReason
from unidoc_rl.env.prompts import load_prompts
from unidoc_rl.env.vision import CoordinateConvention, PixelBudget, crop_and_zoom, display_size
from unidoc_rl.rewards.ground_truth import GroundTruth
from unidoc_rl.rewards.scorer import EpisodeScorer
from unidoc_rl.rewards.settings import RewardSettings
from unidoc_rl.standins.scripted_client import ScriptedLLMClient

QUESTION = "What is the revenue?"
RESULTS = {"revenue": ["report_2", "report_1", "report_3", "report_4"], "costs": ["report_1", "report_5"]}
BUDGET = PixelBudget(8 * 28 * 28, 64 * 28 * 28)  # the tiny policy's processor budget
NDCG_RANK_1 = 1 / math.log2(3)


async def run(kit, policy_path, processor, static_search, script, results=RESULTS, client=None, batch=None, **agent):
    url, backend = static_search(results)
    client = client or kit.ScriptedLLMClient(processor.tokenizer, script)
    config = kit.make_config(policy_path, url, **agent)
    output = await kit.run_worker(config, client, batch or kit.question_batch([QUESTION]), processor)
    return output, client, backend


def truth_with_gold(page_id: str, answer: str = "42 million") -> GroundTruth:
    return GroundTruth.from_dict({"query": QUESTION, "reference_answer": answer, "gold_pages": [{"page_id": page_id}]})


# --- forced final answers --------------------------------------------------------------------------------------


async def test_a_forced_answer_is_scored_as_an_answer(kit, policy_path, processor, static_search):
    script = [
        "<search>revenue</search>",
        "<select>1</select>",
        "<bbox>[0, 0, 50, 50]</bbox>",
        "<answer>42 million</answer>",
    ]
    output, client, _ = await run(kit, policy_path, processor, static_search, script, max_images=4)
    episode = kit.episode_of(output)
    assert episode.finish_reason is FinishReason.MAX_IMAGES
    assert episode.forced_answer and episode.answer == "42 million"
    assert [turn.forced for turn in episode.turns] == [False, False, False, True]
    assert episode.invalid_actions == 0 and episode.crops == []
    assert kit.unpadded(output)["mask"][-2] == 1  # the forced turn is trained
    breakdown = await EpisodeScorer(RewardSettings(answer_scorer="exact_match")).score(
        episode, truth_with_gold("report_1")
    )
    assert (breakdown.format, breakdown.answer, breakdown.forced_answer) == (1.0, 1.0, True)
    # 0.6·answer + 0.1·(retrieval + selection + crop + format): gold page at rank 1, selected, no crop needed.
    assert breakdown.score == pytest.approx(0.6 + 0.1 * (NDCG_RANK_1 + 1 + 1 + 1))
    assert output.non_tensor_batch["agent_metrics"][0]["forced_answers"] == 1


async def test_a_forced_turn_without_an_answer_did_not_answer(kit, policy_path, processor, static_search):
    script = ["<search>revenue</search>", "<select>1</select>", "<bbox>[0, 0, 50, 50]</bbox>", "no idea, sorry"]
    output, _, _ = await run(kit, policy_path, processor, static_search, script, max_images=4)
    episode = kit.episode_of(output)
    assert episode.finish_reason is FinishReason.MAX_IMAGES and episode.answer is None
    assert episode.invalid_actions == 0 and not episode.forced_answer
    assert episode.actions == [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX]
    assert episode.turns[-1].forced and episode.turns[-1].text == "no idea, sorry"
    breakdown = await EpisodeScorer(RewardSettings(answer_scorer="exact_match")).score(
        episode, truth_with_gold("report_1")
    )
    assert (breakdown.format, breakdown.answer) == (0.5, 0.0)
    assert breakdown.score == pytest.approx(0.1 * (NDCG_RANK_1 + 1 + 1 + 0.5))


# --- one grammar for the parser and for stopping ---------------------------------------------------------------


class StopIgnoringClient(ScriptedLLMClient):
    """An engine that ignores stop strings: it returns the whole scripted text."""

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        params = {key: value for key, value in sampling_params.items() if key != "stop"}
        return await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=params, **kwargs)


@pytest.mark.parametrize("honours_stops", [True, False])
async def test_every_accepted_closing_form_ends_the_turn(kit, policy_path, processor, static_search, honours_stops):
    tokenizer = processor.tokenizer
    for form in CLOSING_FORMS["search"]:
        script = [f"<search>revenue{form} then <answer>too early</answer>", "<answer>42 million</answer>"]
        client = kit.ScriptedLLMClient(tokenizer, script) if honours_stops else StopIgnoringClient(tokenizer, script)
        output, client, backend = await run(kit, policy_path, processor, static_search, script, client=client)
        episode = kit.episode_of(output)
        assert backend.queries == ["revenue"], form
        assert episode.answer == "42 million" and episode.actions[0] is ActionKind.SEARCH, form
        first_turn = tokenizer.decode(client.calls[1].prompt_ids[len(client.calls[0].prompt_ids) :])
        assert first_turn.startswith(f"<search>revenue{form}"), (form, first_turn)
        assert "too early" not in tokenizer.decode(kit.unpadded(output)["response"]), form


# --- the record holds only what the model saw ------------------------------------------------------------------


async def test_last_turn_select_and_crop_have_no_effects(kit, policy_path, processor, static_search):
    output, _, _ = await run(
        kit, policy_path, processor, static_search, ["<search>revenue</search>", "<select>1</select>"], max_turns=2
    )
    episode = kit.episode_of(output)
    assert episode.actions == [ActionKind.SEARCH, ActionKind.SELECT]
    assert episode.searches[0].selected is None and episode.shown_page_ids == ["report_2", "report_1", "report_3"]
    output, _, _ = await run(
        kit,
        policy_path,
        processor,
        static_search,
        ["<search>revenue</search>", "<select>1</select>", "<bbox>[0, 0, 50, 50]</bbox>"],
        max_turns=3,
    )
    episode = kit.episode_of(output)
    assert episode.actions == [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX] and episode.crops == []
    assert episode.turns[-1].observation is None and episode.turns[0].observation.startswith("Results for: revenue")


async def test_image_budget_cuts_a_search_candidate_list(kit, policy_path, processor, static_search):
    script = ["<search>revenue</search>", "<select>1</select>", "<answer>7</answer>"]
    output, client, _ = await run(kit, policy_path, processor, static_search, script, max_images=2)
    episode = kit.episode_of(output)
    assert episode.searches[0].candidates == ["report_2", "report_1"]  # 3 candidates, 2 images left
    assert episode.searches[0].retrieved == RESULTS["revenue"]
    assert episode.finish_reason is FinishReason.MAX_IMAGES and episode.forced_answer
    assert episode.searches[0].selected is None  # the select hit the spent budget and was never shown
    assert [len(call.images) for call in client.calls] == [0, 2, 2]


# --- prompt and settings agree ---------------------------------------------------------------------------------


async def test_the_system_prompt_comes_from_the_agent_settings(kit, policy_path, processor, static_search):
    questions = np.array([[load_prompts().question_message(QUESTION)]], dtype=object)
    batch = kit.question_batch([QUESTION])
    batch.non_tensor_batch["raw_prompt"] = questions
    output, client, _ = await run(
        kit, policy_path, processor, static_search, ["<answer>x</answer>"], batch=batch, convention="norm1000"
    )
    prompt = processor.tokenizer.decode(client.calls[0].prompt_ids)
    assert "on a 0-1000 scale of the selected page image" in prompt and "in pixels" not in prompt
    assert prompt.count("<|im_start|>system") == 1

    stale = kit.question_batch([QUESTION])  # the whole prompt rendered for the absolute convention
    assert list(stale.non_tensor_batch["raw_prompt"][0]) == load_prompts().prompt_messages(
        QUESTION, CoordinateConvention.ABSOLUTE
    )
    with pytest.raises(PromptMismatchError, match="convention=norm1000"):
        await run(
            kit, policy_path, processor, static_search, ["<answer>x</answer>"], batch=stale, convention="norm1000"
        )


# --- box frames ------------------------------------------------------------------------------------------------


@pytest.fixture
def sized_pages(kit):
    return {
        "wide_1": kit.pattern_page(1, (900, 500)),
        "tall_2": kit.pattern_page(2, (500, 1100)),
        "small_3": kit.pattern_page(3, (300, 300)),
    }


def raw_of(display_box, raw_size):
    display = display_size(raw_size, BUDGET)
    sx, sy = raw_size[0] / display[0], raw_size[1] / display[1]
    return (display_box[0] * sx, display_box[1] * sy, display_box[2] * sx, display_box[3] * sy)


async def test_bbox_without_select_crops_candidate_zero_and_a_second_bbox_crops_the_page_again(
    kit, policy_path, processor, static_search, sized_pages
):
    backend = StaticSearchBackend(sized_pages, {"q": ["wide_1", "tall_2", "small_3"]})
    script = [
        "<search>q</search>",
        "<bbox>[10, 20, 110, 60]</bbox>",
        "<bbox>[5, 5, 45, 35]</bbox>",
        "<answer>a</answer>",
    ]
    url, _ = static_search({}, backend=backend)
    client = kit.ScriptedLLMClient(processor.tokenizer, script)
    output = await kit.run_worker(kit.make_config(policy_path, url), client, kit.question_batch([QUESTION]), processor)
    episode = kit.episode_of(output)
    first, second = episode.crops
    # The focus is candidate 0 (the wide page), not the last image shown (the small page).
    assert first.page_id == second.page_id == "wide_1"
    assert first.boxes_raw[0] == pytest.approx(raw_of((10, 20, 110, 60), (900, 500)))
    # A bbox after a bbox is in the frame of the focus page as displayed, not of the zoomed crop.
    assert second.boxes_raw[0] == pytest.approx(raw_of((5, 5, 45, 35), (900, 500)))
    assert episode.page_sizes["wide_1"] == {"raw": (900, 500), "display": display_size((900, 500), BUDGET)}
    images = client.calls[-1].images
    expected = crop_and_zoom(sized_pages["wide_1"], [second.boxes_raw[0]], BUDGET)
    assert np.array_equal(np.asarray(images[-1]), np.asarray(expected))


async def test_norm1000_boxes_end_to_end(kit, policy_path, processor, static_search, sized_pages):
    backend = StaticSearchBackend(sized_pages, {"q": ["tall_2", "wide_1"]})
    script = ["<search>q</search>", "<bbox>[100, 250, 500, 750]</bbox>", "<answer>a</answer>"]
    url, _ = static_search({}, backend=backend)
    client = kit.ScriptedLLMClient(processor.tokenizer, script)
    config = kit.make_config(policy_path, url, convention="norm1000")
    batch = kit.question_batch([QUESTION])
    batch.non_tensor_batch["raw_prompt"] = np.array(
        [load_prompts().prompt_messages(QUESTION, "norm1000")], dtype=object
    )
    output = await kit.run_worker(config, client, batch, processor)
    (crop,) = kit.episode_of(output).crops
    assert crop.boxes_raw[0] == pytest.approx((50, 275, 250, 825))  # 0.1-0.5 × 500 wide, 0.25-0.75 × 1100 high
    assert crop.boxes_norm1000[0] == pytest.approx((100, 250, 500, 750))
    display = display_size((500, 1100), BUDGET)
    assert crop.boxes_display[0] == pytest.approx(
        (0.1 * display[0], 0.25 * display[1], 0.5 * display[0], 0.75 * display[1])
    )


# --- nothing the model writes, and no page, raises out of a rollout ------------------------------------------------

EXTREME_SIZES = [(40, 4000), (6000, 60), (1, 1), (3, 700), (600, 800), (28, 28)]
"""Wide, tall, a single pixel, beyond smart_resize's aspect ratio (cannot be shown), ordinary, one patch."""

number = st.one_of(
    st.integers(-3000, 3000).map(str),
    st.sampled_from(["0", "0.5", "1e9", "99999999", "-0.0", "1000", "1000.0001", "12.25"]),
)
box = st.lists(number, min_size=4, max_size=4).map(lambda values: "[" + ", ".join(values) + "]")
turn = st.one_of(
    st.sampled_from(["<search>q</search>", "<search>r</search>", "<search>none</search>", "<answer>x</answer>"]),
    st.integers(-2, 9).map(lambda index: f"<select>{index}</select>"),
    box.map(lambda b: f"<bbox>{b}</bbox>"),
    st.lists(box, min_size=2, max_size=6).map(lambda boxes: "<bbox>[" + ", ".join(boxes) + "]</bbox>"),
    st.sampled_from(["garbage", "<bbox>[1,2,3]</bbox>", "<select>\u0663</select>", "<search></search>", ""]),
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(
        st.sampled_from(EXTREME_SIZES) | st.tuples(st.integers(1, 2000), st.integers(1, 2000)), min_size=4, max_size=4
    ),
    script=st.lists(turn, min_size=1, max_size=6),
    min_crop_side=st.sampled_from([0.0, 28.0]),
)
def test_no_model_output_or_page_raises_out_of_the_worker(kit, policy_path, processor, sizes, script, min_crop_side):
    pages = {f"p_{index}": Image.new("RGB", size, (index * 50, 100, 200)) for index, size in enumerate(sizes)}
    backend = StaticSearchBackend(pages, {"q": ["p_0", "p_1", "p_2"], "r": ["p_3", "p_1"]})
    url = register_inprocess_backend("property", backend)
    try:
        client = kit.ScriptedLLMClient(processor.tokenizer, lambda call: script[call.turn % len(script)])
        config = kit.make_config(policy_path, url, max_turns=6, min_crop_side=min_crop_side)
        output = asyncio.run(kit.run_worker(config, client, kit.question_batch([QUESTION]), processor))
    finally:
        unregister_inprocess_backend("property")
    episode = kit.episode_of(output)
    row = kit.unpadded(output)
    images = client.calls[-1].images
    vision_start = processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert (row["prompt"] + row["response"]).count(vision_start) == len(images)
    assert len(row["mask"]) == len(row["response"]) and set(row["mask"]) <= {0, 1}
    assert sum(row["mask"]) == sum(len(call.reply_ids) for call in client.calls)
    assert len(episode.turns) == episode.num_turns == len(client.calls)
    assert episode.finish_reason is not None
    assert set(episode.page_sizes) == set(episode.shown_page_ids)
    shown_images = sum(len(step.candidates) for step in episode.searches) + len(episode.selected_page_ids)
    assert shown_images + len(episode.crops) == len(images)
    budget = PixelBudget(8 * 28 * 28, 64 * 28 * 28)
    for image in images:  # every image is shown at a size the processor leaves unchanged
        assert display_size(image.size, budget) == image.size
    for page_id in episode.shown_page_ids:
        assert pages[page_id].size not in {(3, 700), (40, 4000), (6000, 60)}  # no stable display size: never shown
    for crop in episode.crops:
        width, height = pages[crop.page_id].size
        for x1, y1, x2, y2 in crop.boxes_raw:
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
