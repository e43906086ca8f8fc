"""Parse a judge model's reply into a score in [0, 1]."""

from __future__ import annotations

import json
import re

_JUDGE_TAG = re.compile(r"<judge>\s*(.*?)\s*</judge>", re.IGNORECASE | re.DOTALL)
_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)
_TRUE_WORDS = {"true", "yes", "correct", "right", "1"}
_FALSE_WORDS = {"false", "no", "incorrect", "wrong", "0"}
_JSON_KEYS = ("judge", "verdict", "correct", "score")


class VerdictParseError(ValueError):
    """The judge replied with something that holds no verdict."""


def parse_verdict(reply: str | None) -> float:
    """Score from `<judge>True|False|number</judge>` (the last tag wins) or a JSON object with one of the keys
    judge / verdict / correct / score."""
    if not reply:
        raise VerdictParseError("empty judge reply")
    tags = _JUDGE_TAG.findall(reply)
    if tags:
        return _value_to_score(tags[-1], reply)
    for candidate in _JSON_OBJECT.findall(reply):
        try:
            obj = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            for key in _JSON_KEYS:
                if key in obj:
                    return _value_to_score(obj[key], reply)
    raise VerdictParseError(f"no verdict in judge reply: {reply[:200]!r}")


def _value_to_score(value, reply: str) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        if 0.0 <= value <= 1.0:
            return float(value)
        raise VerdictParseError(f"judge score {value} outside [0, 1] in reply {reply[:200]!r}")
    word = str(value).strip().strip(".").lower()
    if word in _TRUE_WORDS:
        return 1.0
    if word in _FALSE_WORDS:
        return 0.0
    try:
        return _value_to_score(float(word), reply)
    except ValueError:
        raise VerdictParseError(f"unrecognized verdict {value!r} in judge reply {reply[:200]!r}") from None
