"""`UniDocAgentLoop`: the search → select → crop → answer episode as a verl agent loop.

Registered with verl's agent-loop registry as "unidoc_agent"; the dataset column `agent_name` picks it per sample.

Token-in/token-out: the prompt is rendered once; each assistant turn appends exactly the ids the engine returned
(mask 1, with their log-probs); each observation is rendered on its own through verl's Continuous Token helpers and
appended with mask 0. Nothing the model wrote is decoded and re-encoded into the sequence, and each turn costs
time proportional to that turn's tokens, not to the history. Every generate call receives all images shown so far.

The episode's facts (searches, candidates, selections, boxes, answer, finish reason) go into an `EpisodeRecord`,
returned in `extra_fields["episode"]` for the reward manager.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from PIL import Image
from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register

from unidoc_rl.agent.search import resolve_backend
from unidoc_rl.env.actions import STOP_STRINGS, first_closing_end
from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.env.environment import AgentEnvironment, Observation
from unidoc_rl.env.episode import EpisodeRecord, FinishReason
from unidoc_rl.env.prompts import load_prompts, message_text
from unidoc_rl.env.vision import PixelBudget

logger = logging.getLogger(__name__)

SETTINGS_KEY = "unidoc_agent"
PLACEHOLDER_BIAS = -100.0
"""Logit bias for image/video placeholder tokens (the floor of OpenAI-style logit_bias ranges)."""
PROMPT_CACHE_SIZE = 256
"""Rendered prompts kept per agent loop: a GRPO group's trajectories share one prompt."""


@dataclass
class _Tokens:
    """The growing token sequence of one episode and its response-side metadata."""

    ids: list[int]
    prompt_length: int
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    images: list[Image.Image] = field(default_factory=list)
    last_assistant: dict[str, Any] | None = None
    user_turns: int = 0


class PromptMismatchError(ValueError):
    """A dataset row's system prompt disagrees with the agent settings."""


@register("unidoc_agent")
class UniDocAgentLoop(AgentLoopBase):
    reusable = True
    """Episode state lives in `run`'s locals, so one instance serves every trajectory (see verl_worker)."""

    def __init__(self, *args, tools: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings = AgentSettings.from_mapping(self.config.get(SETTINGS_KEY))
        self.prompts = load_prompts(self.settings.prompt_template)
        self.prompt_length = self.rollout_config.prompt_length
        self.response_length = self.rollout_config.response_length
        self.max_model_len = self.rollout_config.get("max_model_len") or (self.prompt_length + self.response_length)
        if self.processor is None or getattr(self.processor, "image_processor", None) is None:
            raise ValueError("UniDocAgentLoop needs a vision-language processor (page images are observations)")
        size = self.processor.image_processor.size
        self.budget: PixelBudget = self.settings.pixel_budget(size["shortest_edge"], size["longest_edge"])
        self.im_end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        # A sampled image/video placeholder would desynchronize tokens and pixel features in every later pass, so
        # each turn asks the engine (vLLM or the local one) never to sample them.
        placeholders = {getattr(self.processor, name, None) for name in ("image_token", "video_token")} - {None}
        self.placeholder_bias = {
            int(self.tokenizer.convert_tokens_to_ids(text)): PLACEHOLDER_BIAS for text in placeholders
        }
        self._prompt_ids: OrderedDict[str, asyncio.Future] = OrderedDict()

    # --- verl entry point ----------------------------------------------------------------------------------

    async def _render_prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        """The prompt's token ids, rendered once for all trajectories that share the (text-only) prompt."""
        key = json.dumps(messages, sort_keys=True, default=str)
        rendering = self._prompt_ids.get(key)
        if rendering is None:
            rendering = asyncio.ensure_future(self.ct_build_initial_tokens(messages))
            self._prompt_ids[key] = rendering
            if len(self._prompt_ids) > PROMPT_CACHE_SIZE:
                self._prompt_ids.popitem(last=False)
        else:
            self._prompt_ids.move_to_end(key)
        try:
            return list(await rendering)
        except Exception:
            self._prompt_ids.pop(key, None)
            raise

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        messages = self._prompt(kwargs["raw_prompt"])
        backend = resolve_backend(
            self.settings.search_url, timeout=self.settings.search_timeout, retries=self.settings.search_retries
        )
        environment = AgentEnvironment(self.settings, self.budget, backend, prompts=self.prompts)
        environment.reset(uid=_sample_uid(kwargs), question=self.prompts.question_of(messages))
        metrics: dict[str, float] = {"generate_sequences": 0.0, "tool_calls": 0.0}
        request_id = uuid4().hex

        prompt_ids = await self._render_prompt(messages)
        want_logprobs = bool(sampling_params.get("logprobs"))
        tokens = _Tokens(ids=list(prompt_ids), prompt_length=len(prompt_ids), logprobs=[] if want_logprobs else None)

        while not environment.done:
            generated = await self._generate(tokens, sampling_params, request_id, metrics)
            if generated is None:
                environment.end(FinishReason.MAX_MODEL_LEN)
                break
            token_ids, logprobs = generated
            if not token_ids:
                environment.empty_turn()
                break
            await self._append_assistant(tokens, token_ids, logprobs)
            text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
            tokens.last_assistant = {"role": "assistant", "content": text}
            started = time.perf_counter()
            await environment.step(text, admit=lambda observation: self._append_observation(tokens, observation))
            metrics["tool_calls"] += time.perf_counter() - started

        return self._output(tokens, environment.record, metrics)

    def _prompt(self, raw_prompt) -> list[dict[str, Any]]:
        """The chat prompt with the system prompt rendered from this loop's own settings.

        The prompt's only source of truth is the `unidoc_agent` settings (coordinate convention, candidates per
        search): a dataset row carries just the question, and a row whose system prompt says anything else is
        refused rather than trained on with boxes read in another frame than the model was told.
        """
        messages = list(raw_prompt)
        _require_text_prompt(messages)
        settings = self.settings
        system = self.prompts.system_prompt(settings.convention, settings.limits.n_candidates)
        if messages and messages[0].get("role") == "system":
            if message_text(messages[0]) != system:
                raise PromptMismatchError(
                    "the dataset's system prompt differs from the one these unidoc_agent settings render "
                    f"(prompt_template={settings.prompt_template}, convention={settings.convention.value}, "
                    f"n_candidates={settings.limits.n_candidates})"
                    "; rebuild the data with `python -m unidoc_rl.data.prepare` (rows then carry only the "
                    "question) or make the settings match"
                )
            return messages
        return [{"role": "system", "content": system}, *messages]

    # --- one assistant turn --------------------------------------------------------------------------------

    def _room(self, tokens: _Tokens) -> int:
        """Tokens one more turn may use, keeping one for the `<|im_end|>` that closes it."""
        context_room = self.max_model_len - len(tokens.ids)
        response_room = self.response_length - len(tokens.mask)
        return min(context_room, response_room, self.settings.max_tokens_per_turn + 1) - 1

    async def _generate(
        self, tokens: _Tokens, sampling_params: dict[str, Any], request_id: str, metrics: dict[str, float]
    ) -> tuple[list[int], list[float] | None] | None:
        room = self._room(tokens)
        if room < self.settings.min_turn_tokens:
            return None
        params = {
            **sampling_params,
            "max_tokens": room,
            "stop": list(STOP_STRINGS),
            "include_stop_str_in_output": True,
            "logit_bias": dict(self.placeholder_bias),
        }
        started = time.perf_counter()
        output = await self.server_manager.generate(
            request_id=request_id,
            prompt_ids=tokens.ids,
            sampling_params=params,
            image_data=list(tokens.images) or None,
        )
        metrics["generate_sequences"] += time.perf_counter() - started
        token_ids = list(output.token_ids)[:room]
        logprobs = list(output.log_probs)[: len(token_ids)] if output.log_probs else None
        cut = _first_action_end(self.tokenizer, token_ids)
        return token_ids[:cut], (logprobs[:cut] if logprobs is not None else None)

    async def _append_assistant(self, tokens: _Tokens, token_ids: list[int], logprobs: list[float] | None) -> None:
        if tokens.logprobs is not None and logprobs is None:
            logprobs = [0.0] * len(token_ids)
        merged, mask, aligned = await self.ct_merge_assistant_token(
            tokens.ids, token_ids, tokens.mask, tokens.logprobs, assistant_logprobs=logprobs
        )
        tokens.ids, tokens.mask = merged.token_ids, mask
        if tokens.logprobs is not None:
            tokens.logprobs = aligned
        if tokens.ids[-1] != self.im_end_id:
            # Generation stopped at the action's closing tag; the turn still ends as the chat template ends it.
            tokens.ids.append(self.im_end_id)
            tokens.mask.append(0)
            if tokens.logprobs is not None:
                tokens.logprobs.append(0.0)

    # --- observations ---------------------------------------------------------------------------------------

    async def _append_observation(self, tokens: _Tokens, observation: Observation) -> bool:
        """Append an observation turn with mask 0; False (and nothing appended) if the next turn would not fit."""
        previous = [tokens.last_assistant]
        merged, mask, aligned = await self.ct_merge_context_msg(
            previous, [*previous, observation.message], tokens.ids, tokens.mask, tokens.logprobs
        )
        tail = self.settings.min_turn_tokens + 1
        if len(merged.token_ids) + tail > self.max_model_len or len(mask) + tail > self.response_length:
            return False
        tokens.ids, tokens.mask = merged.token_ids, mask
        if tokens.logprobs is not None:
            tokens.logprobs = aligned
        tokens.images.extend(observation.images)
        tokens.user_turns += 1
        return True

    # --- output --------------------------------------------------------------------------------------------

    def _output(self, tokens: _Tokens, record: EpisodeRecord, metrics) -> AgentLoopOutput:
        prompt_ids = tokens.ids[: tokens.prompt_length]
        response_ids = tokens.ids[tokens.prompt_length :]
        agent_metrics = {
            "forced_answer_turns": sum(turn.forced for turn in record.turns),
            "forced_answers": int(record.forced_answer),
            "search_errors": record.search_failures,
            "turns": record.num_turns,
            "images": len(tokens.images),
            "invalid_actions": record.invalid_actions,
            "response_tokens": len(response_ids),
        }
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids,
            response_mask=tokens.mask,
            response_logprobs=tokens.logprobs,
            multi_modal_data={"images": list(tokens.images)} if tokens.images else {},
            num_turns=record.num_turns + tokens.user_turns + 1,
            metrics=metrics,
            extra_fields={
                "episode": record.to_dict(),
                "agent_metrics": agent_metrics,
                "turn_scores": [],
                "tool_rewards": [],
            },
        )


def _require_text_prompt(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(part.get("type") != "text" for part in content):
            raise ValueError("UniDocAgentLoop expects a text-only prompt; page images come from search")


def _sample_uid(kwargs: dict[str, Any]) -> str:
    extra_info = kwargs.get("extra_info") or {}
    uid = extra_info.get("uid") if isinstance(extra_info, dict) else None
    return str(uid if uid is not None else kwargs.get("uid", ""))


def _first_action_end(tokenizer, token_ids: list[int]) -> int:
    """Length of the shortest prefix that contains an accepted closing tag (all of it when there is none).

    Engines that honour stop strings already end there; this guards against ones that do not, so the turn
    never carries a second action. Containment grows with the prefix, so a binary search needs O(log n) decodes.
    """
    if first_closing_end(tokenizer.decode(token_ids, skip_special_tokens=False)) is None:
        return len(token_ids)
    low, high = 1, len(token_ids)
    while low < high:
        middle = (low + high) // 2
        if first_closing_end(tokenizer.decode(token_ids[:middle], skip_special_tokens=False)) is None:
            low = middle + 1
        else:
            high = middle
    return low
