"""A transformers-backed implementation of verl's `LLMServerClient.generate` for CPU and single-GPU runs.

Token ids and images in, token ids and log-probs out, like verl's vLLM server: the agent loop cannot tell the
difference. Requests that arrive close together (the trajectories of a batch) are generated together, grouped by
sampling settings, with left padding: a batch is collected until no new request came for `batch_wait_s`, it is
full (`max_batch_size`) or `batch_max_wait_s` has passed since its first request. Requests that arrive while a
batch is generating form the next one.

Log-probs are those of the sampled tokens under the model's distribution at the sampling temperature
(`log_softmax(logits / T)`, T = 1 for greedy decoding), which is what verl's actor recomputes for the same tokens.
Top-p/top-k restrict sampling but do not renormalize the reported log-probs.

Sampling is reproducible whatever the batching: each request draws from its own generator, seeded from the
engine's seed, the request's prompt ids and how many identical prompts came before it since the last `reseed`.
Which requests happen to share a batch (a matter of timing) therefore never changes what is sampled.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

from unidoc_rl.env.vision import PixelBudget, display_size

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to the logits before sampling, like vLLM's `logit_bias`."""

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> SamplingSettings:
        top_k = params.get("top_k")
        return cls(
            temperature=float(params.get("temperature", 1.0) or 0.0),
            top_p=float(params.get("top_p", 1.0) or 1.0),
            top_k=int(top_k) if top_k is not None and int(top_k) > 0 else None,
            repetition_penalty=float(params.get("repetition_penalty", 1.0) or 1.0),
            stop=tuple(params.get("stop") or ()),
            logit_bias=tuple(
                sorted((int(token), float(bias)) for token, bias in (params.get("logit_bias") or {}).items())
            ),
        )

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@dataclass
class _Request:
    prompt_ids: list[int]
    images: list[Image.Image]
    generator: torch.Generator | None
    max_tokens: int
    settings: SamplingSettings
    future: asyncio.Future = field(repr=False)


class PerRequestSampler(LogitsProcessor):
    """Samples each row with its own generator and leaves only that token, so greedy decoding emits it.

    Gumbel-max: the token is argmax(logits / T + g) with g Gumbel noise, an exact sample of softmax(logits / T)
    restricted to the tokens top-k/top-p keep. Each row's noise comes from its own generator in blocks of
    `NOISE_BLOCK` steps (one draw per row per block instead of one multinomial call per row per token), so a
    row's samples depend only on its generator and its step, not on the other rows of the batch.

    Runs after generate's own processors (repetition penalty, suppressed tokens); `generate` still returns the raw
    logits, from which the reported log-probs are computed.
    """

    NOISE_BLOCK = 16

    def __init__(self, generators: list[torch.Generator], settings: SamplingSettings):
        self.generators = generators
        self.settings = settings
        self.step = 0
        self.gumbel: torch.Tensor | None = None

    def _draw_block(self, vocab: int, device: torch.device) -> torch.Tensor:
        uniform = torch.stack(
            [
                torch.rand((self.NOISE_BLOCK, vocab), generator=generator, device=generator.device)
                for generator in self.generators
            ]
        ).to(device)
        tiny = torch.finfo(uniform.dtype).tiny
        return -torch.log(-torch.log(uniform.clamp_(min=tiny)).clamp_(max=-tiny))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.settings.temperature
        if self.settings.top_k:
            kth = torch.topk(logits, min(self.settings.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.settings.top_p < 1.0:
            ordered, order = torch.sort(logits, descending=True, dim=-1)
            probs_sorted = torch.softmax(ordered, dim=-1)
            drop = probs_sorted.cumsum(-1) - probs_sorted >= self.settings.top_p
            logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
        offset = self.step % self.NOISE_BLOCK
        if offset == 0:
            self.gumbel = self._draw_block(logits.shape[-1], logits.device)
        self.step += 1
        chosen = (logits + self.gumbel[:, offset]).argmax(dim=-1, keepdim=True)
        return torch.full_like(scores, float("-inf")).scatter(-1, chosen, 0.0)


class StopAtStrings(StoppingCriteria):
    """Marks a row done once its generated text contains a stop string.

    A stop string can only complete with a token whose text contains the string's last character, so only rows
    whose newest token is such a candidate (a lookup table over the vocabulary) get their recent tokens decoded.
    """

    def __init__(self, tokenizer, stop: tuple[str, ...], candidates: torch.Tensor, prompt_width: int):
        self.tokenizer = tokenizer
        self.stop = stop
        self.candidates = candidates
        self.prompt_width = prompt_width
        self.tail_tokens = max(len(text) for text in stop)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        newest = input_ids[:, -1].cpu()
        start = max(self.prompt_width, input_ids.shape[1] - self.tail_tokens)
        for row in torch.nonzero(self.candidates[newest.clamp(max=len(self.candidates) - 1)]).flatten().tolist():
            tail = self.tokenizer.decode(input_ids[row, start:].tolist())
            done[row] = any(text in tail for text in self.stop)
        return done


def stop_candidate_table(tokenizer, stop: tuple[str, ...], vocab_size: int) -> torch.Tensor:
    """For each token id, whether its text contains the last character of one of the stop strings."""
    last_chars = {text[-1] for text in stop}
    texts = tokenizer.batch_decode([[token_id] for token_id in range(min(vocab_size, len(tokenizer)))])
    table = torch.zeros(vocab_size, dtype=torch.bool)
    table[: len(texts)] = torch.tensor([any(char in text for char in last_chars) for text in texts], dtype=torch.bool)
    return table


class LocalEngine(LLMServerClient):
    def __init__(
        self,
        model,
        processor,
        *,
        max_model_len: int | None = None,
        default_max_tokens: int = 512,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.01,
        batch_max_wait_s: float = 0.25,
        seed: int | None = None,
    ):
        super().__init__(config=None)
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = next(model.parameters()).device
        self.max_model_len = max_model_len or model.config.text_config.max_position_embeddings
        self.default_max_tokens = default_max_tokens
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.batch_max_wait_s = batch_max_wait_s
        self.image_token_id = model.config.image_token_id
        # A sampled image/video placeholder would desynchronize tokens and pixel features for every later pass.
        self.suppressed_ids = sorted({model.config.image_token_id, model.config.video_token_id} - {None})
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)
        self._pending: list[_Request] = []
        self._worker: asyncio.Task | None = None
        self.batches_run: list[int] = []
        """Size of every generate batch, in order (for tests and metrics)."""
        self._seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else seed
        self._prompt_occurrences: dict[bytes, int] = {}
        self._stop_candidates: dict[tuple[str, ...], torch.Tensor] = {}

    def reseed(self, seed: int) -> None:
        """Restart the per-request sampling streams, as if the engine had been built with `seed`."""
        self._seed = seed
        self._prompt_occurrences.clear()

    def _request_generator(self, prompt_ids: list[int]) -> torch.Generator:
        digest = hashlib.blake2b(torch.tensor(prompt_ids, dtype=torch.int64).numpy().tobytes(), digest_size=16)
        key = digest.digest()
        occurrence = self._prompt_occurrences.get(key, 0)
        self._prompt_occurrences[key] = occurrence + 1
        digest.update(f"{self._seed}:{occurrence}".encode())
        generator = torch.Generator(device=self.device)
        return generator.manual_seed(int.from_bytes(digest.digest()[:8], "little") >> 1)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32, **kwargs):
        from transformers import Qwen2_5_VLForConditionalGeneration

        from unidoc_rl.compat import load_policy_processor

        attention = "sdpa" if device == "cpu" else kwargs.pop("attn_implementation", "sdpa")
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(path), dtype=dtype, attn_implementation=attention
        ).to(device)
        return cls(model, load_policy_processor(path), **kwargs)

    # --- verl's seam ---------------------------------------------------------------------------------------

    async def generate(
        self,
        request_id,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        if video_data:
            raise ValueError("LocalEngine does not support video inputs")
        prompt_ids = [int(token) for token in prompt_ids]
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens leaves no room within max_model_len={self.max_model_len}"
            )
        requested = (
            sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens") or self.default_max_tokens
        )
        settings = SamplingSettings.from_params(sampling_params)
        request = _Request(
            prompt_ids=prompt_ids,
            images=list(image_data or []),
            max_tokens=max(1, min(int(requested), room)),
            settings=settings,
            generator=None if settings.greedy else self._request_generator(prompt_ids),
            future=asyncio.get_running_loop().create_future(),
        )
        self._check_images(request)
        self._pending.append(request)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        token_ids, log_probs = await request.future
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
        )

    # --- batching ------------------------------------------------------------------------------------------

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            await self._collect_arrivals(loop)
            settings = self._pending[0].settings
            batch = [request for request in self._pending if request.settings == settings][: self.max_batch_size]
            for request in batch:
                self._pending.remove(request)
            try:
                results = await loop.run_in_executor(None, self._generate_batch, batch)
            except Exception as error:  # noqa: BLE001 - the error belongs to the callers, not to this task
                for request in batch:
                    request.future.set_exception(error)
                continue
            self.batches_run.append(len(batch))
            for request, result in zip(batch, results, strict=True):
                request.future.set_result(result)

    async def _collect_arrivals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Waits while requests keep arriving, until the batch is full or the oldest has waited long enough."""
        deadline = loop.time() + self.batch_max_wait_s
        while len(self._pending) < self.max_batch_size and loop.time() < deadline:
            arrived = len(self._pending)
            await asyncio.sleep(min(self.batch_wait_s, max(0.0, deadline - loop.time())))
            if len(self._pending) == arrived:
                return

    def _check_images(self, request: _Request) -> None:
        expected = request.prompt_ids.count(self.image_token_id)
        size = self.processor.image_processor.size
        budget = PixelBudget(size["shortest_edge"], size["longest_edge"])
        provided = 0
        for image in request.images:
            width, height = display_size(image.size, budget)
            provided += (width // 14) * (height // 14) // 4
        if expected != provided:
            raise ValueError(
                f"prompt has {expected} image tokens but the {len(request.images)} images given need {provided}"
            )

    def _image_inputs(self, images: list[Image.Image]) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.processor.image_processor(images=images, return_tensors="pt")
        return features["pixel_values"], features["image_grid_thw"]

    @torch.no_grad()
    def _generate_batch(self, batch: list[_Request]) -> list[tuple[list[int], list[float]]]:
        settings = batch[0].settings
        width = max(len(request.prompt_ids) for request in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, request in enumerate(batch):
            input_ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            attention_mask[row, width - len(request.prompt_ids) :] = 1
        inputs: dict[str, Any] = {
            "input_ids": input_ids.to(self.device),
            "attention_mask": attention_mask.to(self.device),
            # M-RoPE needs to know which tokens are image tokens; without this it falls back to 1-D positions.
            "mm_token_type_ids": ((input_ids == self.image_token_id) & attention_mask.bool()).long().to(self.device),
        }
        images = [image for request in batch for image in request.images]
        if images:
            pixel_values, grid = self._image_inputs(images)
            inputs["pixel_values"] = pixel_values.to(self.device, self.model.dtype)
            inputs["image_grid_thw"] = grid.to(self.device)
        generation = {
            "max_new_tokens": max(request.max_tokens for request in batch),
            "do_sample": False,
            "output_logits": True,
            "return_dict_in_generate": True,
            "pad_token_id": self.pad_id,
            "eos_token_id": sorted(self.eos_ids),
            "repetition_penalty": settings.repetition_penalty,
            "suppress_tokens": self.suppressed_ids,
        }
        if settings.logit_bias:
            generation["sequence_bias"] = {(token,): bias for token, bias in settings.logit_bias}
        if not settings.greedy:
            sampler = PerRequestSampler([request.generator for request in batch], settings)
            generation["logits_processor"] = LogitsProcessorList([sampler])
        if settings.stop:
            if settings.stop not in self._stop_candidates:
                vocab = self.model.get_output_embeddings().weight.shape[0]
                self._stop_candidates[settings.stop] = stop_candidate_table(self.tokenizer, settings.stop, vocab)
            criterion = StopAtStrings(self.tokenizer, settings.stop, self._stop_candidates[settings.stop], width)
            generation["stopping_criteria"] = StoppingCriteriaList([criterion])
        was_training = self.model.training
        self.model.eval()
        try:
            output = self.model.generate(**inputs, **generation)
        finally:
            self.model.train(was_training)
        new_tokens = output.sequences[:, width:].cpu()
        scale = 1.0 if settings.greedy else settings.temperature
        logits = torch.stack(output.logits, dim=1).float().cpu() / scale
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, new_tokens.unsqueeze(-1)).squeeze(-1)
        results = []
        for row, request in enumerate(batch):
            length = self._turn_length(new_tokens[row].tolist(), request.max_tokens, settings.stop)
            results.append((new_tokens[row, :length].tolist(), log_probs[row, :length].tolist()))
        return results

    def _turn_length(self, tokens: list[int], max_tokens: int, stop: tuple[str, ...]) -> int:
        """Tokens up to and including the first EOS or the token completing the first stop string."""
        length = min(len(tokens), max_tokens)
        for index, token in enumerate(tokens[:length]):
            if token in self.eos_ids:
                length = index + 1
                break
        if not stop or not any(s in self.tokenizer.decode(tokens[:length]) for s in stop):
            return length
        low, high = 1, length
        while low < high:
            middle = (low + high) // 2
            if any(s in self.tokenizer.decode(tokens[:middle]) for s in stop):
                high = middle
            else:
                low = middle + 1
        return low
