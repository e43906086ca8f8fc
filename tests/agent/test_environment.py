"""The environment driven with plain strings: every action kind, every budget path, every invalid reason.

No model, no tokenizer, no verl: `AgentEnvironment.step(text)` against an in-memory search backend, as the agent
loop, synthesis and evaluation call it.
"""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from unidoc_rl.agent.search import StaticSearchBackend
from unidoc_rl.env import environment as environment_module
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.env.environment import AgentEnvironment, EpisodeFinishedError
from unidoc_rl.env.episode import ActionKind, FinishReason
from unidoc_rl.env.episode_state import EpisodeLimits
from unidoc_rl.env.vision import PixelBudget

BUDGET = PixelBudget(8 * 28 * 28, 64 * 28 * 28)
PAGES = {f"p{index}": Image.new("RGB", (560, 840), (index * 40, 200, 200)) for index in range(6)}
RESULTS = {"revenue": ["p0", "p1", "p2", "p3"], "costs": ["p1", "p4", "p5"], "bad": ["p0", "broken", "p1"]}


class Backend(StaticSearchBackend):
    """Static results; the page "broken" cannot be loaded; the query "down" fails."""

    def __init__(self):
        super().__init__({**PAGES, "broken": PAGES["p0"]}, RESULTS)

    async def search(self, queries, top_k=None):
        if queries == ["down"]:
            raise TimeoutError("no answer within 10 s")
        return await super().search(queries, top_k)

    async def load_image(self, hit):
        if hit.page_id == "broken":
            raise OSError("truncated PNG")
        return await super().load_image(hit)


def make(**limits) -> AgentEnvironment:
    force = limits.pop("force_final_answer", True)
    settings = AgentSettings(limits=EpisodeLimits(**limits), force_final_answer=force)
    environment = AgentEnvironment(settings, BUDGET, Backend())
    environment.reset(uid="u1", question="What is the revenue?")
    return environment


def play(environment: AgentEnvironment, *turns: str, admit=None):
    async def run():
        return [await environment.step(text, admit=admit) for text in turns]

    return asyncio.run(run())


# --- the prompt and each action kind ---------------------------------------------------------------------------


def test_reset_returns_the_prompt_and_a_fresh_record():
    environment = make()
    play(environment, "<search>revenue</search>")
    messages = environment.reset(uid="u2", question="How many staff?")
    assert [message["role"] for message in messages] == ["system", "user"]
    assert "<search>query</search>" in messages[0]["content"]
    assert environment.record.uid == "u2" and environment.record.question == "How many staff?"
    assert environment.record.turns == [] and environment.record.searches == [] and not environment.done


def test_search_select_crop_answer():
    environment = make()
    search, select, crop, answer = play(
        environment,
        "<think>look</think><search>revenue</search>",
        "<select>1</select>",
        "<bbox>[0, 0, 100, 150]</bbox>",
        "<answer>42 million</answer>",
    )
    assert search.observation.text.startswith("Results for: revenue")
    assert [image.size for image in search.observation.images] == [(168, 252)] * 3  # 560×840 at the budget
    assert not search.done and search.finish_reason is None and search.action.kind is ActionKind.SEARCH
    assert select.observation.text.startswith("Selected Image 1") and len(select.observation.images) == 1
    assert crop.observation.text.startswith("Zoomed region") and len(crop.observation.images) == 1
    assert answer.done and answer.observation is None and answer.finish_reason is FinishReason.ANSWERED
    record = environment.record
    assert record.actions == [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER]
    assert record.searches[0].retrieved == ["p0", "p1", "p2", "p3"]
    assert record.searches[0].candidates == ["p0", "p1", "p2"] and record.searches[0].selected == "p1"
    (crop_step,) = record.crops
    assert crop_step.page_id == "p1" and crop_step.boxes_display == [(0.0, 0.0, 100.0, 150.0)]
    assert crop_step.boxes_norm1000 == [pytest.approx((0.0, 0.0, 1000 * 100 / 168, 1000 * 150 / 252))]
    assert record.answer == "42 million" and not record.forced_answer and record.num_turns == 4
    assert [turn.observation is not None for turn in record.turns] == [True, True, True, False]
    with pytest.raises(EpisodeFinishedError, match="answered"):
        play(environment, "<answer>again</answer>")


def test_a_second_search_shows_only_new_pages_and_a_failed_search_keeps_the_candidates():
    environment = make()
    _, costs, down = play(environment, "<search>revenue</search>", "<search>costs</search>", "<search>down</search>")
    assert environment.record.searches[1].candidates == ["p4", "p5"]
    assert costs.observation.text.count("Image ") == 2
    assert down.observation.text.startswith("Search failed (TimeoutError: no answer within 10 s)")
    assert environment.record.searches[2].failed and environment.record.searches[2].candidates == []
    assert environment.state.focus.page_id == "p4"  # the failed search left the focus where it was
    assert environment.record.actions == [ActionKind.SEARCH] * 3 and environment.record.invalid_actions == 0


def test_a_page_that_cannot_be_shown_is_left_out_and_counted():
    environment = make()
    (result,) = play(environment, "<search>bad</search>")
    assert environment.record.searches[0].candidates == ["p0", "p1"]
    assert len(result.observation.images) == 2
    assert result.observation.text.endswith("1 more result(s) could not be displayed.")


# --- invalid actions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("turns", "reason"),
    [
        (["I think it is 42"], "no_action"),
        (["<search>revenue"], "unclosed_tag"),
        (["<search>a <answer>b</answer></search>"], "nested_tag"),
        (["<search>  </search>"], "empty_argument"),
        (["<select>first</select>"], "bad_index"),
        (["<bbox>[1, 2]</bbox>"], "bad_box"),
        (["<bbox>[[0,0,9,9],[0,0,9,9],[0,0,9,9],[0,0,9,9],[0,0,9,9]]</bbox>"], "too_many_boxes"),
        (["<select>0</select>"], "no_candidates"),
        (["<search>revenue</search>", "<select>3</select>"], "index_out_of_range"),
        (["<bbox>[0, 0, 50, 50]</bbox>"], "no_focus_page"),
        (["<search>revenue</search>", "<bbox>[50, 50, 50, 90]</bbox>"], "degenerate_box"),
        (["<search>revenue</search>", "<bbox>[400, 500, 450, 600]</bbox>"], "box_outside_page"),
        (["<search>revenue</search>", f"<bbox>[0, 0, 1{'0' * 400}, 50]</bbox>"], "non_finite_box"),
    ],
)
def test_each_invalid_reason_is_an_observation_and_the_episode_goes_on(turns, reason):
    environment = make()
    *_, result = play(environment, *turns)
    assert not result.done and result.observation.reports_invalid
    assert result.observation.text.startswith(f"Invalid action ({reason}): ")
    assert result.observation.images == []
    assert environment.record.invalid_reasons == [reason]
    assert environment.record.actions[-1] is ActionKind.INVALID
    assert environment.record.turns[-1].action is ActionKind.INVALID
    assert environment.record.turns[-1].detail.startswith(f"{reason}: ")
    assert environment.record.crops == [] and environment.record.selected_page_ids == []


def test_a_crop_that_cannot_be_made_is_reported(monkeypatch):
    def fail(*_args, **_kwargs):
        raise MemoryError("zoom too large")

    monkeypatch.setattr(environment_module, "crop_and_zoom", fail)
    environment = make()
    _, result = play(environment, "<search>revenue</search>", "<bbox>[0, 0, 100, 100]</bbox>")
    assert result.observation.reports_invalid
    assert environment.record.invalid_reasons == ["crop_failed"]
    assert "MemoryError: zoom too large" in environment.record.turns[-1].detail


# --- budgets ---------------------------------------------------------------------------------------------------


def test_the_turn_before_the_last_warns_and_a_last_turn_action_has_no_effects():
    environment = make(max_turns=3)
    first, second, last = play(environment, "<search>revenue</search>", "<select>1</select>", "<search>costs</search>")
    assert "last turn" not in first.observation.text
    assert second.observation.text.endswith("This is your last turn: answer with <answer>text</answer>.")
    assert last.done and last.finish_reason is FinishReason.MAX_TURNS and last.observation is None
    record = environment.record
    assert record.actions == [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.SEARCH]
    assert len(record.searches) == 1 and record.shown_page_ids == ["p0", "p1", "p2"]
    assert record.num_turns == 3 and record.answer is None


def test_an_invalid_last_turn_counts_as_invalid_and_ends_the_episode():
    environment = make(max_turns=2)
    _, last = play(environment, "<search>revenue</search>", "<select>9</select>")
    assert last.done and last.finish_reason is FinishReason.MAX_TURNS
    assert environment.record.invalid_reasons == ["index_out_of_range"]
    assert environment.record.turns[-1].observation is None


def test_the_image_budget_brings_one_forced_request_and_its_answer_is_the_answer():
    environment = make(max_images=3)
    search, select, answer = play(environment, "<search>revenue</search>", "<select>1</select>", "<answer>42</answer>")
    assert len(search.observation.images) == 3
    assert select.final_answer_request is FinishReason.MAX_IMAGES and not select.done
    assert select.observation.text.startswith("Budget reached (max_images).") and select.observation.images == []
    assert answer.done and answer.finish_reason is FinishReason.MAX_IMAGES
    record = environment.record
    assert record.answer == "42" and record.forced_answer
    assert [turn.forced for turn in record.turns] == [False, False, True]
    assert record.actions == [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.ANSWER]
    assert record.selected_page_ids == []  # the select was never carried out


def test_a_forced_turn_that_does_not_answer_did_not_answer():
    environment = make(max_images=3)
    *_, reply = play(environment, "<search>revenue</search>", "<search>costs</search>", "<search>more</search>")
    assert reply.done and reply.finish_reason is FinishReason.MAX_IMAGES
    record = environment.record
    assert record.answer is None and not record.forced_answer
    assert record.actions == [ActionKind.SEARCH, ActionKind.SEARCH]
    assert record.turns[-1].forced and record.turns[-1].action is ActionKind.SEARCH


def test_without_forced_answers_a_spent_budget_ends_the_episode():
    environment = make(max_images=3, force_final_answer=False)
    _, select = play(environment, "<search>revenue</search>", "<select>0</select>")
    assert select.done and select.finish_reason is FinishReason.MAX_IMAGES and select.observation is None


def test_a_search_is_cut_to_the_images_left():
    environment = make(max_images=4)
    play(environment, "<search>revenue</search>", "<search>costs</search>")
    assert environment.record.searches[1].candidates == ["p4"]


# --- what the caller decides: context room ---------------------------------------------------------------------


def test_an_observation_that_does_not_fit_is_never_recorded():
    shown = []

    async def room_for_one(observation):
        shown.append(observation.text)
        return len(shown) == 1

    environment = make()
    first, second = play(environment, "<search>revenue</search>", "<select>1</select>", admit=room_for_one)
    assert not first.done
    assert second.done and second.finish_reason is FinishReason.MAX_MODEL_LEN
    record = environment.record
    assert record.actions == [ActionKind.SEARCH, ActionKind.SELECT]  # the select counts by kind
    assert record.selected_page_ids == [] and record.turns[-1].observation is None
    assert record.turns[0].observation == shown[0]


def test_an_invalid_action_whose_report_does_not_fit_counts_once():
    async def no_room(_observation):
        return False

    environment = make()
    (result,) = play(environment, "<select>0</select>", admit=no_room)
    assert result.finish_reason is FinishReason.MAX_MODEL_LEN
    assert environment.record.actions == [ActionKind.INVALID] and environment.record.invalid_reasons == [
        "no_candidates"
    ]


def test_a_final_answer_request_that_does_not_fit_ends_on_the_budget():
    async def room_for_one(observation):
        return observation.text.startswith("Results")

    environment = make(max_images=3)
    _, select = play(environment, "<search>revenue</search>", "<select>0</select>", admit=room_for_one)
    assert select.done and select.finish_reason is FinishReason.MAX_IMAGES
    assert environment.record.turns[-1].observation is None


def test_an_empty_turn_and_an_outside_end():
    environment = make()
    play(environment, "<search>revenue</search>")
    result = environment.empty_turn()
    assert result.done and result.finish_reason is FinishReason.NO_ACTION
    assert environment.record.turns[-1].text == "" and environment.record.turns[-1].detail.startswith("no_action")
    assert environment.record.actions == [ActionKind.SEARCH]

    environment = make()
    play(environment, "<search>revenue</search>")
    assert environment.end(FinishReason.MAX_MODEL_LEN).finish_reason is FinishReason.MAX_MODEL_LEN
    assert environment.record.num_turns == 1 and environment.record.searches[0].candidates == ["p0", "p1", "p2"]
