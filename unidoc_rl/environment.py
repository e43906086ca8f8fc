"""The agent's environment: carries out one action against the search backend and the page images, and renders
the observation the model reads next.

Every stage that produces trajectories goes through it (the RL agent loop, SFT synthesis, evaluation), so the
observations, images and record of a trajectory depend only on its actions, never on which stage ran them.

Nothing the model writes and no page content raises out of `step`: a malformed or impossible action becomes an
invalid-action observation with its reason, a failed search a search-error observation, a page that cannot be
displayed is left out of its search's candidates (the others are still shown, and the observation says how many
could not be). Effects reach the episode state only through `Step.commit`, called once the observation has been
shown, so the record holds only what the model saw.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from unidoc_rl.actions import (
    Action,
    AnswerAction,
    BBoxAction,
    InvalidAction,
    InvalidReason,
    SearchAction,
    SelectAction,
)
from unidoc_rl.agent_settings import AgentSettings
from unidoc_rl.episode import FinishReason
from unidoc_rl.episode_state import EpisodeState, PageView
from unidoc_rl.prompts import load_prompts, message_text
from unidoc_rl.vision import PixelBudget, crop_and_zoom

logger = logging.getLogger(__name__)

_MAX_ERROR_TEXT = 200


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


@dataclass
class Step:
    """The outcome of one action: what to show, and how to record it once shown."""

    observation: Observation | None
    """None when the action was not carried out (a budget ends the episode, or nobody would read the result)."""
    commit: Callable[[], None] = field(default=lambda: None)
    budget_reason: FinishReason | None = None


class AgentEnvironment:
    def __init__(self, settings: AgentSettings, budget: PixelBudget, backend: Any):
        self.settings = settings
        self.budget = budget
        self.backend = backend
        self.prompts = load_prompts(settings.prompt_template)

    def new_state(self, uid: str = "", question: str = "") -> EpisodeState:
        state = EpisodeState(limits=self.settings.limits, budget=self.budget, convention=self.settings.convention)
        state.record.uid = uid
        state.record.question = question
        return state

    def note(self, state: EpisodeState) -> str | None:
        """The warning appended to an observation when the model's next turn is its last."""
        return self.prompts.last_turn_note if self.settings.force_final_answer and state.turns_left == 1 else None

    async def step(self, state: EpisodeState, action: Action, *, render: bool = True) -> Step:
        """Carry out a non-answer action. With `render=False` (no later turn would read the observation) only its
        validity is decided: a valid action then counts by kind, without effects."""
        if isinstance(action, AnswerAction):
            raise ValueError("an answer ends the episode; it has no observation")
        note = self.note(state)
        if isinstance(action, InvalidAction):
            return self._invalid(state, action, note)
        target = self._resolve(state, action)
        if isinstance(target, InvalidAction):
            return self._invalid(state, target, note)
        if not render:
            return Step(None, lambda: state.record_action(action.kind))
        if state.images_left <= 0:
            return Step(None, lambda: state.record_action(action.kind), FinishReason.MAX_IMAGES)
        if isinstance(action, SearchAction):
            return await self._search(state, action, note)
        if isinstance(action, SelectAction):
            message = self.prompts.selected_page(action.index, target.display, note)
            return Step(Observation(message, [target.display]), lambda: state.record_select(target))
        return await self._crop(state, target, note)

    # --- actions -------------------------------------------------------------------------------------------

    @staticmethod
    def _resolve(state: EpisodeState, action: Action):
        if isinstance(action, SelectAction):
            return state.resolve_select(action.index)
        if isinstance(action, BBoxAction):
            return state.resolve_crop(action.boxes)
        return None

    def _invalid(self, state: EpisodeState, invalid: InvalidAction, note: str | None) -> Step:
        state.record_invalid(invalid)
        message = self.prompts.invalid_action(invalid.reason.value, invalid.detail, note)
        return Step(Observation(message, [], reports_invalid=True))

    async def _crop(self, state: EpisodeState, mapped, note: str | None) -> Step:
        focus = state.focus
        try:
            zoom = await asyncio.get_running_loop().run_in_executor(
                None, lambda: crop_and_zoom(focus.raw, [box.raw for box in mapped], self.budget)
            )
        except Exception as error:  # noqa: BLE001 - page content or an extreme box must not end the rollout
            logger.warning("crop of %s failed: %s", focus.page_id, error)
            detail = f"the region could not be zoomed ({type(error).__name__}: {error})"[:_MAX_ERROR_TEXT]
            return self._invalid(state, InvalidAction(InvalidReason.CROP_FAILED, detail), note)
        observation = Observation(self.prompts.cropped_region(zoom, note), [zoom])
        return Step(observation, lambda: state.record_crop(mapped, zoom))

    async def _search(self, state: EpisodeState, action: SearchAction, note: str | None) -> Step:
        try:
            (hits,) = await self.backend.search([action.query], top_k=self.settings.search_top_k)
        except Exception as error:  # noqa: BLE001 - any search failure becomes an observation, never a crash
            logger.warning("search for %r failed: %s", action.query, error)
            reason = f"{type(error).__name__}: {error}"[:_MAX_ERROR_TEXT]
            message = self.prompts.search_failed(reason, note)
            return Step(Observation(message, []), lambda: state.record_failed_search(action.query, reason))
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
        return Step(observation, lambda: state.record_search(action.query, retrieved, pages, scores))

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
