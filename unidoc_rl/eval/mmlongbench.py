"""MMLongBench-Doc's own scoring: answer extraction, per-format scoring and F1 over "Not answerable".

The rules follow the benchmark's `eval_score.py` (reimplemented here): the gold `answer_format` picks the rule,
strings are cleaned (lower case, parenthesised text, one pair of quotes, a leading `$` and trailing `%` removed),
Int compares integers, Float compares within 1% relative or at shared decimals (also against gold/100 and
gold*100), Str/None use exact match for "exact-match" strings (URLs, file names, phone numbers, dates, e-mails,
times) and ANLS at 0.5 otherwise, List compares sorted items. Where the official code crashes, an unparseable
Float gold scores 0 and two empty lists score 1.

The official pipeline extracts a short answer from a free-form response with an LLM prompt. The agent already
answers inside `<answer>`, so `extract_answer` is a rule-based extraction of that short text for the gold format.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Sequence

from unidoc_rl.rewards.answer_match import levenshtein

NOT_ANSWERABLE = "Not answerable"
_UNANSWERABLE_PHRASES = (
    "not answerable",
    "unanswerable",
    "cannot be answered",
    "can not be answered",
    "cannot be determined",
    "not mentioned",
    "no information",
    "not provided",
)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_EXACT_PATTERNS = (
    re.compile(r"\d+(?:[- ]\d+)?"),
    re.compile(r"\d{4}-\d{2}-\d{2}"),
    re.compile(r"\d{4}-\d{2}"),
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
)


def clean_string(text) -> str:
    text = str(text).lower().strip()
    text = re.sub(r"\s*\([^)]*\)", "", text).strip()
    if text[:1] in ("'", '"'):
        text = text[1:]
    if text[-1:] in ("'", '"'):
        text = text[:-1]
    text = text.strip()
    if text.startswith("$"):
        text = text[1:]
    if text.endswith("%"):
        text = text[:-1]
    return text.strip()


def is_exact_match_string(text: str) -> bool:
    if "https://" in text or text.endswith((".py", "ipynb")) or text.startswith("page"):
        return True
    if "a.m." in text or "p.m." in text:
        return True
    return any(pattern.fullmatch(text) for pattern in _EXACT_PATTERNS)


def official_anls(prediction: str, gold: str, threshold: float = 0.5) -> float:
    if not prediction and not gold:
        return 1.0
    similarity = 1.0 - levenshtein(prediction, gold) / max(len(prediction), len(gold))
    return similarity if similarity > threshold else 0.0


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 3


def is_float_equal(gold: float, prediction: float) -> bool:
    for target in (gold / 100, gold, gold * 100):
        if math.isclose(target, prediction, rel_tol=0.01):
            return True
        places = max(2, min(_decimals(prediction), _decimals(target)))
        if round(prediction, places) == round(target, places):
            return True
    return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _as_list(value) -> list:
    if isinstance(value, list):
        return value
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return [text]
        return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
    return [text]


def score_answer(gold: str, prediction: str, answer_format: str) -> float:
    """The benchmark's score in [0, 1] of an extracted prediction against the gold answer."""
    if answer_format == "Int":
        try:
            return float(int(gold) == int(float(prediction)))
        except (ValueError, OverflowError):
            return 0.0
    if answer_format == "Float":
        try:
            return float(is_float_equal(float(clean_string(gold)), float(clean_string(prediction))))
        except (ValueError, OverflowError):
            return 0.0
    if answer_format == "List":
        gold_items = sorted(clean_string(item) for item in _as_list(gold))
        predicted = sorted(clean_string(item) for item in _as_list(prediction))
        if len(gold_items) != len(predicted):
            return 0.0
        if not gold_items:
            return 1.0  # both empty (the official code fails here)
        if _is_number(gold_items[0]) or is_exact_match_string(gold_items[0]):
            return float("-".join(gold_items) == "-".join(predicted))
        return min(official_anls(p, g) for p, g in zip(predicted, gold_items, strict=True))
    gold_text, predicted_text = clean_string(gold), clean_string(prediction)
    if is_exact_match_string(gold_text):
        return float(gold_text == predicted_text)
    return official_anls(predicted_text, gold_text)


def extract_answer(answer: str | None, answer_format: str) -> str:
    """The short answer the official extractor would give for the agent's `<answer>` text."""
    if answer is None or not answer.strip():
        return "Fail to answer"
    text = answer.strip()
    if any(phrase in text.lower() for phrase in _UNANSWERABLE_PHRASES):
        return NOT_ANSWERABLE
    if answer_format in ("Int", "Float"):
        match = _NUMBER.search(text)
        return match.group(0).replace(",", "") if match else text
    if answer_format == "List":
        items = _as_list(text)
        if len(items) == 1 and isinstance(items[0], str) and not text.startswith("["):
            items = [part.strip() for part in re.split(r";|,|\band\b", text) if part.strip()]
        return repr([str(item) for item in items])
    return text


def f1_not_answerable(golds: Sequence[str], predictions: Sequence[str], scores: Sequence[float]) -> float:
    """The benchmark's F1: recall over answerable questions, precision over questions not predicted unanswerable."""
    answerable = [score for gold, score in zip(golds, scores, strict=True) if gold != NOT_ANSWERABLE]
    attempted = sum(1 for prediction in predictions if prediction != NOT_ANSWERABLE)
    total = sum(answerable)
    recall = total / len(answerable) if answerable else 0.0
    precision = total / attempted if attempted else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
