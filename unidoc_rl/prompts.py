"""The text the agent reads: the system prompt and the observation turns.

Observations are user turns. Their wording is short on purpose: every observation token costs context and is
never trained on. The same builders serve rollout and SFT data, so the model sees one format everywhere.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from unidoc_rl.vision import CoordinateConvention

ACTION_REMINDER = (
    "Reply with one action: <search>query</search>, <select>index</select>, <bbox>[x1, y1, x2, y2]</bbox> "
    "or <answer>text</answer>."
)
FINAL_ANSWER_REQUEST = "No more actions are possible. Answer now with <answer>text</answer>."
LAST_TURN_NOTE = "This is your last turn: answer with <answer>text</answer>."

_COORDINATES = {
    CoordinateConvention.ABSOLUTE: "in pixels of the selected page image as you see it",
    CoordinateConvention.NORM1000: "on a 0-1000 scale of the selected page image on each axis",
}


def system_prompt(convention: CoordinateConvention = CoordinateConvention.ABSOLUTE, n_candidates: int = 3) -> str:
    return (
        "You answer questions about a collection of document pages. In each turn, think inside <think></think> "
        "if needed, then take exactly one action:\n"
        f"<search>query</search> retrieves up to {n_candidates} new pages, shown as Image 0, Image 1, ...; "
        "Image 0 is selected by default.\n"
        "<select>i</select> selects Image i of the latest search results.\n"
        "<bbox>[x1, y1, x2, y2]</bbox> crops and zooms into a region of the selected page, "
        f"{_COORDINATES[convention]}; several boxes may be given as a list.\n"
        "<answer>text</answer> gives the final answer and ends the episode."
    )


def prompt_messages(
    query: str, convention: CoordinateConvention = CoordinateConvention.ABSOLUTE, n_candidates: int = 3
) -> list[dict[str, Any]]:
    """The chat prompt for one question (the `raw_prompt` of an RL sample)."""
    return [
        {"role": "system", "content": system_prompt(convention, n_candidates)},
        {"role": "user", "content": f"Question: {query}"},
    ]


def _user(parts: list[dict[str, Any]], note: str | None) -> dict[str, Any]:
    if note:
        parts = [*parts, {"type": "text", "text": "\n" + note}]
    return {"role": "user", "content": parts}


def search_results(query: str, pages: list[Image.Image], note: str | None = None) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"Results for: {query}"}]
    for index, image in enumerate(pages):
        parts.append({"type": "text", "text": f"\nImage {index}: "})
        parts.append({"type": "image", "image": image})
    return _user(parts, note)


def no_new_pages(query: str, note: str | None = None) -> dict[str, Any]:
    text = f"Results for: {query}\nNo pages that were not shown already. Try another query."
    return _user([{"type": "text", "text": text}], note)


def selected_page(index: int, image: Image.Image, note: str | None = None) -> dict[str, Any]:
    return _user([{"type": "text", "text": f"Selected Image {index}: "}, {"type": "image", "image": image}], note)


def cropped_region(image: Image.Image, note: str | None = None) -> dict[str, Any]:
    return _user([{"type": "text", "text": "Zoomed region: "}, {"type": "image", "image": image}], note)


def error(message: str, note: str | None = None) -> dict[str, Any]:
    return _user([{"type": "text", "text": f"{message}\n{ACTION_REMINDER}"}], note)


def invalid_action(reason: str, detail: str, note: str | None = None) -> dict[str, Any]:
    return error(f"Invalid action ({reason}): {detail}.", note)


def final_answer_request(reason: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": f"Budget reached ({reason}). {FINAL_ANSWER_REQUEST}"}]}
