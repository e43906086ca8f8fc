"""A trajectory as the RL agent lives it, written down as SFT chat messages.

`Trajectory` takes assistant turns (text with one action), runs each through the agent's observation step (the
same episode state, search backend, prompt builders and coordinate/crop code the RL agent loop uses), and keeps:
- `messages`: the chat in LLaMA-Factory's ShareGPT shape: the agent's system prompt and question, then assistant
  turns and observation turns whose images are `<image>` placeholders, in order;
- `images`: the images those placeholders stand for, exactly as the agent shows them (pages at the display
  budget, crops zoomed), each with a stable file name;
- `state.record`: the episode record the rewards read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from unidoc_rl import prompts
from unidoc_rl.actions import AnswerAction, BBoxAction, InvalidAction, SearchAction, SelectAction, parse_action
from unidoc_rl.agent_settings import AgentSettings
from unidoc_rl.episode import FinishReason
from unidoc_rl.episode_state import EpisodeState, PageView
from unidoc_rl.vision import PixelBudget, crop_and_zoom

IMAGE_PLACEHOLDER = "<image>"


class TrajectoryError(Exception):
    """A turn the synthesis wrote cannot be played (a bug of the caller, or an exhausted budget)."""


@dataclass(frozen=True)
class ShownImage:
    image: Image.Image
    name: str
    """Stable file name: `pages/{page_id}_{w}x{h}.png` for pages (shared by samples), `crop_{n}.png` for crops."""


@dataclass(frozen=True)
class Observation:
    message: dict[str, Any]
    """The user turn, as the agent renders it (content parts with PIL images)."""
    pages: list[PageView]
    """Pages shown by this observation (search candidates, or the selected page)."""
    crop: Image.Image | None = None
    failed: str | None = None
    """A failed search: the error (the agent shows it as an observation; synthesis fails the sample)."""


class Trajectory:
    def __init__(self, uid: str, question: str, settings: AgentSettings, budget: PixelBudget, backend):
        self.settings = settings
        self.budget = budget
        self.backend = backend
        self.state = EpisodeState(limits=settings.limits, budget=budget, convention=settings.convention)
        self.state.record.uid = uid
        self.state.record.question = question
        self.messages: list[dict[str, str]] = [
            {"role": message["role"], "content": message["content"]}
            for message in prompts.prompt_messages(question, settings.convention, settings.limits.n_candidates)
        ]
        self.images: list[ShownImage] = []
        self._crops = 0

    async def act(self, text: str) -> Observation | None:
        """Play one assistant turn; returns its observation (None after the final answer)."""
        state = self.state
        if state.finished:
            raise TrajectoryError("the episode has finished")
        if state.turns_left <= 0:
            raise TrajectoryError(f"no turns left (max_turns={self.settings.limits.max_turns})")
        action = parse_action(text, max_boxes=self.settings.limits.max_boxes)
        if isinstance(action, InvalidAction):
            raise TrajectoryError(f"turn {text!r} is not a valid action: {action.reason.value}: {action.detail}")
        state.begin_turn()
        self.messages.append({"role": "assistant", "content": text})
        if isinstance(action, AnswerAction):
            state.record_answer(action.text)
            state.finish(FinishReason.ANSWERED)
            return None
        if state.turns_left <= 0:
            raise TrajectoryError("the last turn must answer")
        observation, commit = await self._observe(action)
        commit()
        self._append(observation)
        return observation

    # --- the agent's observation step -----------------------------------------------------------------------

    def _note(self) -> str | None:
        return prompts.LAST_TURN_NOTE if self.settings.force_final_answer and self.state.turns_left == 1 else None

    async def _observe(self, action):
        state, note = self.state, self._note()
        if state.images_left <= 0:
            raise TrajectoryError(f"image budget spent (max_images={self.settings.limits.max_images})")
        if isinstance(action, SearchAction):
            return await self._search(action, note)
        if isinstance(action, SelectAction):
            page = state.resolve_select(action.index)
            if isinstance(page, InvalidAction):
                raise TrajectoryError(f"select {action.index}: {page.detail}")
            message = prompts.selected_page(action.index, page.display, note)
            return Observation(message, [page]), lambda: state.record_select(page)
        assert isinstance(action, BBoxAction)
        mapped = state.resolve_crop(action.boxes)
        if isinstance(mapped, InvalidAction):
            raise TrajectoryError(f"bbox {action.boxes}: {mapped.detail}")
        crop = crop_and_zoom(state.focus.raw, [box.raw for box in mapped], self.budget)
        return Observation(prompts.cropped_region(crop, note), [], crop=crop), lambda: state.record_crop(mapped)

    async def _search(self, action: SearchAction, note: str | None):
        state = self.state
        try:
            (hits,) = await self.backend.search([action.query], top_k=self.settings.search_top_k)
            retrieved = [hit.page_id for hit in hits]
            fresh = state.new_page_ids(retrieved)[: state.images_left]
            by_id = {hit.page_id: hit for hit in hits}
            raws = [await self.backend.load_image(by_id[page_id]) for page_id in fresh]
        except Exception as error:  # noqa: BLE001 - as in the agent: a failed search is an observation
            message = prompts.error(f"Search failed ({type(error).__name__}): {error}"[:200], note)
            return Observation(message, [], failed=str(error)), lambda: state.record_search(action.query, [], [])
        pages = [PageView.from_raw(page_id, raw, self.budget) for page_id, raw in zip(fresh, raws, strict=True)]
        if pages:
            message = prompts.search_results(action.query, [page.display for page in pages], note)
        else:
            message = prompts.no_new_pages(action.query, note)
        return Observation(message, pages), lambda: state.record_search(action.query, retrieved, pages)

    # --- SFT rendering -----------------------------------------------------------------------------------------

    def _append(self, observation: Observation) -> None:
        pages = iter(observation.pages)
        parts = []
        for part in observation.message["content"]:
            if part["type"] == "text":
                parts.append(part["text"])
                continue
            parts.append(IMAGE_PLACEHOLDER)
            image = part["image"]
            if observation.crop is not None:
                self._crops += 1
                name = f"crop_{self._crops}.png"
            else:
                page = next(pages)
                name = f"pages/{page.page_id}_{image.width}x{image.height}.png"
            self.images.append(ShownImage(image, name))
        self.messages.append({"role": "user", "content": "".join(parts)})
