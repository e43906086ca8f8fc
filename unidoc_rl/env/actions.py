"""Parse one assistant turn into a typed action, or a typed reason why it is not one.

Grammar (docs/agent.md, Action grammar): an optional `<think>…</think>`, then exactly one of `<search>query</search>`,
`<select>i</select>`, `<bbox>[x1,y1,x2,y2]</bbox>` (or a list of such boxes), `<answer>text</answer>`.

Tolerant of: opening-tag case and inner whitespace, whitespace around arguments, free text before or after the
action. A closing tag is one of `CLOSING_FORMS` (lower, upper or title case; `</tag>`, `</tag >` or `</ tag>`):
the same strings are the engine's stop strings, so generation ends exactly where the parser finds the action's
end, and `first_closing_end` finds it for engines that ignore stop strings.
Strict about: argument syntax (an ASCII-digit index, four finite numbers per box, non-empty text), a missing
closing tag, and an action tag nested inside another action's argument. `parse_action` never raises.

`format_action` writes an action in the grammar (every producer of model text uses it: synthesis, scripted policies,
the viewer's sample run, benchmarks); parsing what it writes gives the action back.

Checks that need episode context (an index within the candidate list, a box inside the page) belong to the
episode state, not to the parser.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from unidoc_rl.env.episode import ActionKind

ACTION_TAGS: tuple[str, ...] = ("search", "select", "bbox", "answer")


def _closing_forms(tag: str) -> tuple[str, ...]:
    names = dict.fromkeys((tag, tag.upper(), tag.title()))
    return tuple(form for name in names for form in (f"</{name}>", f"</{name} >", f"</ {name}>"))


CLOSING_FORMS: dict[str, tuple[str, ...]] = {tag: _closing_forms(tag) for tag in ACTION_TAGS}
"""Every closing tag the parser accepts, per action tag."""
STOP_STRINGS: tuple[str, ...] = tuple(form for forms in CLOSING_FORMS.values() for form in forms)
"""Generation of one turn stops at the closing tag of the first action: exactly the accepted closing forms."""

Box = tuple[float, float, float, float]


class InvalidReason(StrEnum):
    NO_ACTION = "no_action"
    UNCLOSED_TAG = "unclosed_tag"
    NESTED_TAG = "nested_tag"
    EMPTY_ARGUMENT = "empty_argument"
    BAD_INDEX = "bad_index"
    BAD_BOX = "bad_box"
    TOO_MANY_BOXES = "too_many_boxes"
    # Raised by the episode state, which knows the context:
    NO_CANDIDATES = "no_candidates"
    INDEX_OUT_OF_RANGE = "index_out_of_range"
    NO_FOCUS_PAGE = "no_focus_page"
    DEGENERATE_BOX = "degenerate_box"
    BOX_OUTSIDE_PAGE = "box_outside_page"
    NON_FINITE_BOX = "non_finite_box"
    CROP_FAILED = "crop_failed"
    """The boxes mapped onto the page but the crop could not be made (reported, never raised)."""


@dataclass(frozen=True)
class SearchAction:
    query: str
    kind = ActionKind.SEARCH


@dataclass(frozen=True)
class SelectAction:
    index: int
    kind = ActionKind.SELECT


@dataclass(frozen=True)
class BBoxAction:
    boxes: tuple[Box, ...]
    kind = ActionKind.BBOX


@dataclass(frozen=True)
class AnswerAction:
    text: str
    kind = ActionKind.ANSWER


@dataclass(frozen=True)
class InvalidAction:
    reason: InvalidReason
    detail: str
    kind = ActionKind.INVALID


Action = SearchAction | SelectAction | BBoxAction | AnswerAction | InvalidAction

_THINK_BLOCK = re.compile(r"<\s*think\s*>.*?<\s*/\s*think\s*>", re.IGNORECASE | re.DOTALL)
_THINK_TAG = re.compile(r"<\s*/?\s*think\s*>", re.IGNORECASE)
_OPEN_TAG = re.compile(r"<\s*(search|select|bbox|answer)\s*>", re.IGNORECASE)
_ANY_ACTION_TAG = re.compile(r"<\s*/?\s*(search|select|bbox|answer)\s*>", re.IGNORECASE)
_INDEX = re.compile(r"[0-9]{1,6}")
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_BOX = rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
_ONE_BOX = re.compile(_BOX)
_BOX_LIST = re.compile(rf"\[\s*{_BOX}(?:\s*,\s*{_BOX})*\s*\]")
_MAX_DETAIL = 80


_CLOSING = {tag: re.compile("|".join(re.escape(form) for form in forms)) for tag, forms in CLOSING_FORMS.items()}


def first_closing_end(text: str) -> int | None:
    """End offset of the earliest accepted closing tag in `text` (of any action), or None."""
    ends = [match.end() for pattern in _CLOSING.values() if (match := pattern.search(text))]
    return min(ends) if ends else None


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"


def parse_boxes(argument: str, max_boxes: int = 4) -> tuple[Box, ...] | InvalidAction:
    """`[x1,y1,x2,y2]` or `[[…],[…]]` → boxes as floats; anything else is BAD_BOX."""
    text = argument.strip()
    if _ONE_BOX.fullmatch(text):
        boxes = [_ONE_BOX.fullmatch(text).groups()]
    elif _BOX_LIST.fullmatch(text):
        boxes = [match.groups() for match in _ONE_BOX.finditer(text)]
    else:
        return InvalidAction(InvalidReason.BAD_BOX, f"expected [x1, y1, x2, y2] or a list of them, got {_clip(text)!r}")
    if len(boxes) > max_boxes:
        return InvalidAction(InvalidReason.TOO_MANY_BOXES, f"{len(boxes)} boxes, at most {max_boxes} allowed")
    return tuple(tuple(float(value) for value in box) for box in boxes)


def parse_action(text: str, max_boxes: int = 4) -> Action:
    """The first action in one assistant turn; never raises."""
    if not isinstance(text, str):
        return InvalidAction(InvalidReason.NO_ACTION, f"expected text, got {type(text).__name__}")
    body = _THINK_BLOCK.sub(" ", text)
    opening = _OPEN_TAG.search(body)
    if opening is None:
        return InvalidAction(InvalidReason.NO_ACTION, "no <search>, <select>, <bbox> or <answer> tag found")
    tag = opening.group(1).lower()
    closing = _CLOSING[tag].search(body, opening.end())
    if closing is None:
        return InvalidAction(InvalidReason.UNCLOSED_TAG, f"<{tag}> is not closed with </{tag}>")
    argument = body[opening.end() : closing.start()]
    if _ANY_ACTION_TAG.search(argument):
        return InvalidAction(InvalidReason.NESTED_TAG, f"an action tag appears inside <{tag}>")
    argument = argument.strip()
    if not argument:
        return InvalidAction(InvalidReason.EMPTY_ARGUMENT, f"<{tag}> has an empty argument")
    if tag == "search":
        return SearchAction(" ".join(argument.split()))
    if tag == "answer":
        return AnswerAction(argument)
    if tag == "select":
        if not _INDEX.fullmatch(argument):
            return InvalidAction(InvalidReason.BAD_INDEX, f"expected an integer index, got {_clip(argument)!r}")
        return SelectAction(int(argument))
    boxes = parse_boxes(argument, max_boxes=max_boxes)
    if isinstance(boxes, InvalidAction):
        return boxes
    return BBoxAction(boxes)


def _number(value: float) -> str:
    """The shortest positional form that reads back as the same float (the grammar has no exponents)."""
    return np.format_float_positional(float(value), trim="-")


def _holds_tag(text: str) -> bool:
    return bool(_ANY_ACTION_TAG.search(text) or _THINK_TAG.search(text) or first_closing_end(text) is not None)


def format_boxes(boxes: tuple[Box, ...] | list[Box]) -> str:
    """`[x1, y1, x2, y2]` for one box, `[[…], […]]` for several."""
    written = ["[" + ", ".join(_number(value) for value in box) + "]" for box in boxes]
    return written[0] if len(written) == 1 else "[" + ", ".join(written) + "]"


def format_action(action: Action, think: str | None = None) -> str:
    """One assistant turn holding `action` (after an optional `<think>` block), in the grammar `parse_action` reads.

    Raises ValueError for what would not parse back: an invalid action, an empty or whitespace-only argument, an
    action or think tag inside an argument or in the think text, a non-finite box number, an empty box list.
    The parser normalizes whitespace (a query's runs collapse to one space, an answer is stripped), so a text in
    another form reads back normalized.
    """
    if isinstance(action, InvalidAction):
        raise ValueError(f"an invalid action ({action.reason.value}) has no text form")
    if isinstance(action, SearchAction):
        tag, argument = "search", action.query
    elif isinstance(action, AnswerAction):
        tag, argument = "answer", action.text
    elif isinstance(action, SelectAction):
        if action.index < 0:
            raise ValueError(f"a select index is non-negative, got {action.index}")
        tag, argument = "select", str(action.index)
    elif isinstance(action, BBoxAction):
        if not action.boxes:
            raise ValueError("a bbox action needs at least one box")
        if not all(math.isfinite(value) for box in action.boxes for value in box):
            raise ValueError(f"box numbers are finite, got {action.boxes}")
        tag, argument = "bbox", format_boxes(action.boxes)
    else:
        raise TypeError(f"not an action: {action!r}")
    if not argument.strip():
        raise ValueError(f"<{tag}> needs a non-empty argument")
    if _holds_tag(argument):
        raise ValueError(f"the argument of <{tag}> holds a tag: {_clip(argument)!r}")
    prefix = ""
    if think:
        if _holds_tag(think):
            raise ValueError(f"the think text holds a tag: {_clip(think)!r}")
        prefix = f"<think>{think}</think>"
    return f"{prefix}<{tag}>{argument}</{tag}>"
