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


QUESTION_PREFIX = "Question: "


def question_message(query: str) -> dict[str, Any]:
    """The user turn that asks the question (all an RL sample's prompt carries; the agent adds the system prompt)."""
    return {"role": "user", "content": QUESTION_PREFIX + query}


def question_of(messages: list[dict[str, Any]]) -> str:
    """The question of a prompt: its last user turn, without the question prefix."""
    text = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    return text.removeprefix(QUESTION_PREFIX)


def prompt_messages(
    query: str, convention: CoordinateConvention = CoordinateConvention.ABSOLUTE, n_candidates: int = 3
) -> list[dict[str, Any]]:
    """The whole chat prompt for one question, as the agent renders it for these settings."""
    return [{"role": "system", "content": system_prompt(convention, n_candidates)}, question_message(query)]


def _user(parts: list[dict[str, Any]], note: str | None) -> dict[str, Any]:
    if note:
        parts = [*parts, {"type": "text", "text": "\n" + note}]
    return {"role": "user", "content": parts}


def search_results(
    query: str, pages: list[Image.Image], note: str | None = None, unshowable: int = 0
) -> dict[str, Any]:
    """The candidates of one search; `unshowable` counts retrieved new pages that could not be displayed."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"Results for: {query}"}]
    for index, image in enumerate(pages):
        parts.append({"type": "text", "text": f"\nImage {index}: "})
        parts.append({"type": "image", "image": image})
    if unshowable:
        parts.append({"type": "text", "text": f"\n{unshowable} more result(s) could not be displayed."})
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


def message_text(message: dict[str, Any]) -> str:
    """A rendered turn as text, each image as `<image>` (the episode record's and the SFT data's view of it)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part["text"] if part["type"] == "text" else "<image>" for part in content)


def final_answer_request(reason: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": f"Budget reached ({reason}). {FINAL_ANSWER_REQUEST}"}]}
