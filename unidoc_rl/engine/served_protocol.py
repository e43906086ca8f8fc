"""The wire format between the evaluation harness and a served policy: stock `vllm serve`'s render and
token-in/token-out generate endpoints (vLLM 0.24 and later), and the checks that the server saw what was sent.

- `POST /v1/chat/completions/render` with one user message holding one image (a base64 PNG data URL) answers with
  the image's `features`: `mm_hashes.image`, `mm_placeholders.image` (offset and length of its run of
  `<|image_pad|>` tokens in the rendered ids) and `kwargs_data.image` (the processed pixel tensors, serialized by the
  server). The harness renders each image once and keeps these.
- `POST /inference/v1/generate` with `token_ids` (the agent loop's own prompt ids, image pad runs included),
  `features` (each image's hash and tensors, placed at the offset of its run in those ids) and `sampling_params`
  answers with `choices[0].token_ids`, `choices[0].logprobs.content[i].logprob` and `usage.prompt_tokens`.

Without `features` the generate endpoint reads `<|image_pad|>` ids as plain tokens and answers 200: a blind policy.
So every mismatch is an error naming its cause: an image rendered without features, a placeholder run whose length
differs from the agent loop's (another processor or pixel budget), a placeholder count that differs from the
images given, a prompt length the server counted differently, a reply without token ids or with misaligned
log-probs.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any

from PIL import Image

RENDER_PATH = "/v1/chat/completions/render"
GENERATE_PATH = "/inference/v1/generate"
_FORWARDED = ("temperature", "top_p", "repetition_penalty", "stop", "include_stop_str_in_output", "seed")


class PolicyRequestError(RuntimeError):
    """The policy server refused, failed, or answered something other than what was asked."""


@dataclass(frozen=True)
class RenderedImage:
    """One image as the server processed it: its hash, its placeholder run length, its serialized tensors."""

    mm_hash: str
    length: int
    kwargs: str


def image_data_url(image: Image.Image) -> str:
    """A lossless (PNG) data URL: the server processes exactly the displayed pixels."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_data_url(url: str) -> Image.Image:
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise ValueError(f"not a base64 image data URL: {url[:40]!r}")
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


def render_body(model: str, image: Image.Image) -> dict[str, Any]:
    part = {"type": "image_url", "image_url": {"url": image_data_url(image)}}
    return {"model": model, "messages": [{"role": "user", "content": [part]}]}


def _one(mapping: Any, name: str) -> Any:
    values = (mapping or {}).get("image") if isinstance(mapping, dict) else None
    if not isinstance(values, list) or len(values) != 1:
        raise PolicyRequestError(f"the rendered image's features.{name}.image is {values!r}, not one entry")
    return values[0]


def parse_render(payload: Any, image_token_id: int) -> RenderedImage:
    """The features of a one-image render; raises when the server rendered the image without them."""
    features = payload.get("features") if isinstance(payload, dict) else None
    if not isinstance(features, dict):
        raise PolicyRequestError(
            "the server rendered the image without multimodal features (features is null): generation would see "
            "placeholder tokens, not the page; serve a vision-language checkpoint with image inputs enabled"
        )
    placeholder = _one(features.get("mm_placeholders"), "mm_placeholders")
    mm_hash = _one(features.get("mm_hashes"), "mm_hashes")
    kwargs = _one(features.get("kwargs_data"), "kwargs_data")
    if not isinstance(kwargs, str) or not kwargs:
        raise PolicyRequestError("the rendered image carries no pixel data (features.kwargs_data.image is empty)")
    try:
        offset, length = int(placeholder["offset"]), int(placeholder["length"])
    except (TypeError, KeyError, ValueError):
        raise PolicyRequestError(f"malformed image placeholder {placeholder!r}") from None
    run = (payload.get("token_ids") or [])[offset : offset + length]
    if length < 1 or run != [image_token_id] * length:
        raise PolicyRequestError(
            f"the server's image placeholder (offset {offset}, length {length}) is not a run of token "
            f"{image_token_id}, the image pad id of the agent loop's tokenizer: it serves another checkpoint"
        )
    return RenderedImage(mm_hash=str(mm_hash), length=length, kwargs=kwargs)


def placeholder_runs(prompt_ids: list[int], image_token_id: int) -> list[tuple[int, int]]:
    """(offset, length) of each maximal run of the image pad id, in prompt order."""
    runs: list[tuple[int, int]] = []
    start = None
    for position, token in enumerate([*prompt_ids, None]):
        if token == image_token_id:
            start = position if start is None else start
        elif start is not None:
            runs.append((start, position - start))
            start = None
    return runs


def image_features(prompt_ids: list[int], image_token_id: int, rendered: list[RenderedImage]) -> dict[str, Any] | None:
    """The generate request's `features`: each image at the offset of its own placeholder run in `prompt_ids`."""
    runs = placeholder_runs(prompt_ids, image_token_id)
    if len(runs) != len(rendered):
        raise PolicyRequestError(
            f"the prompt holds {len(runs)} image placeholder run(s) but {len(rendered)} image(s) were given"
        )
    if not rendered:
        return None
    for index, ((_, run), image) in enumerate(zip(runs, rendered, strict=True)):
        if image.length != run:
            raise PolicyRequestError(
                f"image {index}: the server expands it to {image.length} placeholder tokens, the agent loop's "
                f"prompt holds {run}: the server's processor sizes images differently (serve the checkpoint whose "
                "processor files the harness reads, with the same min/max pixels)"
            )
    return {
        "mm_hashes": {"image": [image.mm_hash for image in rendered]},
        "mm_placeholders": {"image": [{"offset": offset, "length": run} for offset, run in runs]},
        "kwargs_data": {"image": [image.kwargs for image in rendered]},
    }


def generate_sampling_params(sampling_params: dict[str, Any]) -> dict[str, Any]:
    """vLLM `SamplingParams` fields for the agent loop's sampling parameters (token ids kept as they are)."""
    params: dict[str, Any] = {
        "max_tokens": int(sampling_params.get("max_tokens") or sampling_params.get("max_new_tokens") or 512),
        "skip_special_tokens": False,
    }
    for name in _FORWARDED:
        if sampling_params.get(name) is not None:
            params[name] = sampling_params[name]
    top_k = sampling_params.get("top_k")
    if top_k is not None and int(top_k) > 0:
        params["top_k"] = int(top_k)
    if sampling_params.get("logit_bias"):
        params["logit_bias"] = {str(int(token)): float(bias) for token, bias in sampling_params["logit_bias"].items()}
    if sampling_params.get("logprobs"):
        params["logprobs"] = 0
    return params


def generate_body(
    model: str, prompt_ids: list[int], sampling_params: dict[str, Any], features: dict[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "token_ids": [int(token) for token in prompt_ids],
        "sampling_params": generate_sampling_params(sampling_params),
    }
    if features is not None:
        body["features"] = features
    return body


def parse_generation(payload: Any, prompt_length: int, want_logprobs: bool) -> tuple[list[int], list[float] | None]:
    """(token ids, log-probs) of a generate reply, after checking the server counted the prompt that was sent."""
    try:
        choice = payload["choices"][0]
    except (TypeError, KeyError, IndexError):
        raise PolicyRequestError(f"not a generate response: {str(payload)[:200]!r}") from None
    token_ids = choice.get("token_ids")
    if not isinstance(token_ids, list) or not all(isinstance(token, int) for token in token_ids):
        raise PolicyRequestError(
            "the reply carries no token ids (choices[0].token_ids): model output is never re-tokenized from text"
        )
    counted = (payload.get("usage") or {}).get("prompt_tokens")
    if counted != prompt_length:
        raise PolicyRequestError(
            f"the server counted {counted} prompt tokens, {prompt_length} were sent: it did not generate from the "
            "agent loop's token ids"
        )
    if not want_logprobs:
        return token_ids, None
    content = (choice.get("logprobs") or {}).get("content")
    entries = content if isinstance(content, list) else []
    values = [entry.get("logprob") if isinstance(entry, dict) else None for entry in entries]
    if len(values) != len(token_ids) or not all(
        isinstance(value, int | float) and math.isfinite(value) for value in values
    ):
        raise PolicyRequestError(
            f"the reply's log-probs (choices[0].logprobs.content: {len(values)}) do not align with its "
            f"{len(token_ids)} token ids"
        )
    return token_ids, [float(value) for value in values]
