"""The agent's environment: one episode, stepped with the model's text.

    environment = AgentEnvironment(settings, budget, backend)
    messages = environment.reset(uid, question)        # the prompt: system prompt and question
    result = await environment.step(model_text)         # -> StepResult(observation, done, finish_reason, ...)

The environment owns every rule of the episode: parsing the turn, what an action means in context (through
`EpisodeState`), the turn and image budgets, the one forced request for a final answer when a budget runs out,
and the `EpisodeRecord`. Every stage that produces trajectories steps it (the RL agent loop, SFT synthesis,
evaluation through the agent loop), so observations, images and records depend only on the text of the turns,
never on which stage ran them. Callers handle only what the environment cannot know: tokens and context length.

The record holds only what the model saw. A caller with a context limit passes `admit`, which appends the
observation to the model's context and says whether it fitted; an observation that did not fit ends the episode
(max_model_len, or the budget a final-answer request was about), its effects discarded, a valid action still
counted by kind. Without `admit` every observation is shown.

Nothing the model writes and no page content raises out of `step`: a malformed or impossible action becomes an
invalid-action observation with its reason, a failed search a search-error observation, a page that cannot be
displayed is left out of its search's candidates (the others are still shown, and the observation says how many
could not be).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from PIL import Image

from unidoc_rl.env.actions import (
    Action,
    AnswerAction,
    BBoxAction,
    InvalidAction,
    InvalidReason,
    SearchAction,
    SelectAction,
    parse_action,
)
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.env.episode import ActionKind, EpisodeRecord, FinishReason
from unidoc_rl.env.episode_state import EpisodeState, PageView
from unidoc_rl.env.prompts import AgentPrompts, load_prompts, message_text
from unidoc_rl.env.vision import PixelBudget, crop_and_zoom

logger = logging.getLogger(__name__)

_MAX_ERROR_TEXT = 200
EMPTY_TURN_DETAIL = "no_action: the turn is empty"


@dataclass(frozen=True)
class Observation:
    message: dict[str, Any]
    """The user turn, content parts with PIL images."""
    images: list[Image.Image]
    """The images of `message`, in order."""
    reports_invalid: bool = False

    @property
    def text(self) -> str:
        return message_text(self.message)


@dataclass(frozen=True)
class StepResult:
    observation: Observation | None
    """The next user turn; None when the episode is done."""
    done: bool
    finish_reason: FinishReason | None
    """Why the episode ended (None while it goes on)."""
    action: Action | None
    """The turn's action as parsed (None for a turn with no output at all)."""
    final_answer_request: FinishReason | None = None
    """The budget that ran out, when `observation` is the one request for a final answer."""


Admit = Callable[[Observation], Awaitable[bool]]
"""Appends an observation to the model's context; False when it did not fit (nothing appended)."""


class EpisodeFinishedError(RuntimeError):
    """`step` after the episode ended: a caller's mistake, never the model's."""


class AgentEnvironment:
    def __init__(self, settings: AgentSettings, budget: PixelBudget, backend: Any, prompts: AgentPrompts | None = None):
        self.settings = settings
        self.budget = budget
        self.backend = backend
        self.prompts = prompts or load_prompts(settings.prompt_template)
        self.state = self._fresh_state("", "")
        self._final_request: FinishReason | None = None
        self._admit: Admit | None = None

    # --- the episode -----------------------------------------------------------------------------------------

    def reset(self, uid: str = "", question: str = "") -> list[dict[str, Any]]:
        """Start an episode; returns its prompt (system prompt and question) as chat messages."""
        self.state = self._fresh_state(uid, question)
        self._final_request = None
        return self.prompts.prompt_messages(question, self.settings.convention, self.settings.limits.n_candidates)

    @property
    def record(self) -> EpisodeRecord:
        return self.state.record

    @property
    def done(self) -> bool:
        return self.state.finished

    async def step(self, text: str, admit: Admit | None = None) -> StepResult:
        """Play one assistant turn; returns what to show next, or that the episode is done."""
        self._admit = admit
        state = self._next_turn()
        action = parse_action(text, max_boxes=self.settings.limits.max_boxes)
        state.record_turn(text, action.kind, forced=self._final_request is not None)
        if self._final_request is not None:
            # The reply to the final-answer request: an answer is the episode's answer (forced); anything else
            # is "did not answer", kept as a forced turn, not counted as an action or invalid action.
            if isinstance(action, AnswerAction):
                state.record_answer(action.text, forced=True)
            return self._finish(action, self._final_request)
        if isinstance(action, AnswerAction):
            state.record_answer(action.text)
            return self._finish(action, FinishReason.ANSWERED)
        last_turn = state.turns_left <= 0
        target = action if isinstance(action, InvalidAction) else self._resolve(action)
        if isinstance(target, InvalidAction):
            return await self._invalid(action, target, last_turn)
        if last_turn:
            # No turn would read the observation: the action counts by kind, without effects.
            state.record_action(action.kind)
            return self._finish(action, FinishReason.MAX_TURNS)
        if state.images_left <= 0:
            state.record_action(action.kind)
            return await self._request_final_answer(action, FinishReason.MAX_IMAGES)
        if isinstance(action, SearchAction):
            return await self._search(action)
        if isinstance(action, SelectAction):
            message = self.prompts.selected_page(action.index, target.display, self._note())
            observation = Observation(message, [target.display])
            return await self._show(action, observation, lambda: state.record_select(target))
        return await self._crop(action, target)

    def empty_turn(self) -> StepResult:
        """The model produced no output at all: the turn is recorded empty and the episode ends (no_action)."""
        state = self._next_turn()
        state.record_turn("", ActionKind.INVALID, forced=self._final_request is not None)
        state.record.turns[-1].detail = EMPTY_TURN_DETAIL
        return self._finish(None, FinishReason.NO_ACTION)

    def end(self, reason: FinishReason) -> StepResult:
        """End for a reason outside the environment (no room left for another turn)."""
        return self._finish(None, reason)

    # --- internals ---------------------------------------------------------------------------------------------

    def _fresh_state(self, uid: str, question: str) -> EpisodeState:
        state = EpisodeState(limits=self.settings.limits, budget=self.budget, convention=self.settings.convention)
        state.record.uid = uid
        state.record.question = question
        return state

    def _next_turn(self) -> EpisodeState:
        if self.done:
            raise EpisodeFinishedError(f"the episode has finished ({self.record.finish_reason.value}); call reset")
        self.state.begin_turn()
        return self.state

    def _finish(self, action: Action | None, reason: FinishReason) -> StepResult:
        self.state.finish(reason)
        return StepResult(None, True, self.record.finish_reason, action)

    async def _show(
        self,
        action: Action,
        observation: Observation,
        effects: Callable[[], None] | None,
        *,
        counts: bool = True,
        drop_reason: FinishReason = FinishReason.MAX_MODEL_LEN,
    ) -> StepResult:
        """Show an observation and record its effects, or end the episode when it does not fit the context.

        `counts`: a valid action whose observation never reached the context still counts by kind."""
        if self._admit is not None and not await self._admit(observation):
            if counts:
                self.state.record_action(action.kind)
            return self._finish(action, drop_reason)
        self.state.record_observation(observation.text)
        if effects is not None:
            effects()
        return StepResult(observation, False, None, action)

    def _note(self) -> str | None:
        """The warning appended to an observation when the model's next turn is its last."""
        return self.prompts.last_turn_note if self.settings.force_final_answer and self.state.turns_left == 1 else None

    def _resolve(self, action: Action):
        if isinstance(action, SelectAction):
            return self.state.resolve_select(action.index)
        if isinstance(action, BBoxAction):
            return self.state.resolve_crop(action.boxes)
        return None

    async def _invalid(self, action: Action, invalid: InvalidAction, last_turn: bool) -> StepResult:
        self.state.record_invalid(invalid)
        if last_turn:
            return self._finish(action, FinishReason.MAX_TURNS)
        message = self.prompts.invalid_action(invalid.reason.value, invalid.detail, self._note())
        return await self._show(action, Observation(message, [], reports_invalid=True), None, counts=False)

    async def _request_final_answer(self, action: Action, reason: FinishReason) -> StepResult:
        if not (self.settings.force_final_answer and self.state.turns_left > 0):
            return self._finish(action, reason)
        request = Observation(self.prompts.final_answer_request(reason.value), [])
        result = await self._show(action, request, None, counts=False, drop_reason=reason)
        if result.done:
            return result
        self._final_request = reason
        return StepResult(request, False, None, action, final_answer_request=reason)

    async def _crop(self, action: BBoxAction, mapped) -> StepResult:
        state = self.state
        focus = state.focus
        try:
            zoom = await asyncio.get_running_loop().run_in_executor(
                None, lambda: crop_and_zoom(focus.raw, [box.raw for box in mapped], self.budget)
            )
        except Exception as error:  # noqa: BLE001 - page content or an extreme box must not end the rollout
            logger.warning("crop of %s failed: %s", focus.page_id, error)
            detail = f"the region could not be zoomed ({type(error).__name__}: {error})"[:_MAX_ERROR_TEXT]
            return await self._invalid(action, InvalidAction(InvalidReason.CROP_FAILED, detail), last_turn=False)
        observation = Observation(self.prompts.cropped_region(zoom, self._note()), [zoom])
        return await self._show(action, observation, lambda: state.record_crop(mapped, zoom))

    async def _search(self, action: SearchAction) -> StepResult:
        state = self.state
        note = self._note()
        try:
            (hits,) = await self.backend.search([action.query], top_k=self.settings.search_top_k)
        except Exception as error:  # noqa: BLE001 - any search failure becomes an observation, never a crash
            logger.warning("search for %r failed: %s", action.query, error)
            reason = f"{type(error).__name__}: {error}"[:_MAX_ERROR_TEXT]
            observation = Observation(self.prompts.search_failed(reason, note), [])
            return await self._show(action, observation, lambda: state.record_failed_search(action.query, reason))
        retrieved = [hit.page_id for hit in hits]
        scores = [float(getattr(hit, "score", 0.0) or 0.0) for hit in hits]
        fresh = state.new_page_ids(retrieved)[: state.images_left]
        by_id = {hit.page_id: hit for hit in hits}
        pages = [page for page in await asyncio.gather(*(self._page(by_id[page_id]) for page_id in fresh)) if page]
        if pages or fresh:
            displays = [page.display for page in pages]
            message = self.prompts.search_results(action.query, displays, note, unshowable=len(fresh) - len(pages))
        else:
            message = self.prompts.no_new_pages(action.query, note)
        observation = Observation(message, [page.display for page in pages])
        return await self._show(
            action, observation, partial(state.record_search, action.query, retrieved, pages, scores)
        )

    async def _page(self, hit) -> PageView | None:
        """The page behind a hit at its display size, or None (logged) when it cannot be loaded or displayed."""
        try:
            raw = await self.backend.load_image(hit)
            return await asyncio.get_running_loop().run_in_executor(
                None, lambda: PageView.from_raw(hit.page_id, raw, self.budget)
            )
        except Exception as error:  # noqa: BLE001 - one bad page must not hide the rest of the results
            logger.warning("page %s cannot be shown: %s", hit.page_id, error)
            return None
