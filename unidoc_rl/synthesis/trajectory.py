"""A trajectory as the RL agent lives it, written down as SFT chat messages.

`Trajectory` takes assistant turns (text with one action) and runs each through the agent's environment
(`unidoc_rl.env.environment`, the very step the RL agent loop takes), and keeps:
- `messages`: the chat in LLaMA-Factory's ShareGPT shape: the agent's system prompt and question, then assistant
  turns and observation turns whose images are `<image>` placeholders, in order;
- `images`: the images those placeholders stand for, exactly as the agent shows them (pages at the display
  budget, crops zoomed), each with a stable file name;
- `state.record`: the episode record the rewards read.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from unidoc_rl.env.actions import BBoxAction, InvalidAction, SearchAction, SelectAction
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.env.environment import AgentEnvironment, Observation
from unidoc_rl.env.episode import FinishReason
from unidoc_rl.env.episode_state import EpisodeState
from unidoc_rl.env.prompts import message_text
from unidoc_rl.env.vision import PixelBudget
from unidoc_rl.synthesis.services import StageError


class TrajectoryError(StageError):
    """A turn the synthesis wrote cannot be played (the agent would refuse it, or a budget is spent)."""

    def __init__(self, message: str):
        super().__init__("trajectory", message)


@dataclass(frozen=True)
class ShownImage:
    image: Image.Image
    name: str
    """Stable file name: `pages/{page_id}_{w}x{h}.png` for pages (shared by samples), `crop_{n}.png` for crops."""


class Trajectory:
    def __init__(self, uid: str, question: str, settings: AgentSettings, budget: PixelBudget, backend):
        self.settings = settings
        self.environment = AgentEnvironment(settings, budget, backend)
        self.messages: list[dict[str, str]] = [
            {"role": message["role"], "content": message_text(message)}
            for message in self.environment.reset(uid=uid, question=question)
        ]
        self.images: list[ShownImage] = []
        self._crops = 0

    @property
    def state(self) -> EpisodeState:
        return self.environment.state

    async def act(self, text: str) -> Observation | None:
        """Play one assistant turn through the agent's environment; returns its observation (None after the answer).

        SFT data holds only turns the agent accepts and episodes that end on the teacher's own answer, so any turn
        the environment refuses, a spent budget (which would bring a forced final-answer request) and a last turn
        that does not answer stop the trajectory with a `TrajectoryError`.
        """
        if self.environment.done:
            raise TrajectoryError("the episode has finished")
        result = await self.environment.step(text)
        self.messages.append({"role": "assistant", "content": text})
        action = result.action
        if isinstance(action, InvalidAction):
            raise TrajectoryError(f"turn {text!r} is not a valid action: {action.reason.value}: {action.detail}")
        if result.final_answer_request is not None:
            raise TrajectoryError(f"{action.kind.value} would exceed a budget ({result.final_answer_request.value})")
        if result.done:
            if result.finish_reason is not FinishReason.ANSWERED:
                raise TrajectoryError(f"the last turn must answer (max_turns={self.settings.limits.max_turns})")
            return None
        observation = result.observation
        if observation.reports_invalid:
            raise TrajectoryError(f"the agent refused {text!r}: {observation.text}")
        self.messages.append({"role": "user", "content": observation.text})
        self.images.extend(self._named(action, observation))
        return observation

    def failed_search(self) -> str | None:
        """The error of the latest search, when the service could not answer it."""
        searches = self.state.record.searches
        return searches[-1].error or "search failed" if searches and searches[-1].failed else None

    def _named(self, action, observation: Observation) -> list[ShownImage]:
        if isinstance(action, BBoxAction):
            self._crops += 1
            return [ShownImage(image, f"crop_{self._crops}.png") for image in observation.images]
        if isinstance(action, SelectAction):
            page_ids = [self.state.focus.page_id]
        else:
            assert isinstance(action, SearchAction)
            page_ids = self.state.record.searches[-1].candidates
        return [
            ShownImage(image, f"pages/{page_id}_{image.width}x{image.height}.png")
            for page_id, image in zip(page_ids, observation.images, strict=True)
        ]
