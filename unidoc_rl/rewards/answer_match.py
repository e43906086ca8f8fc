"""Rule-based answer scoring: normalized exact match and ANLS. Used without a judge and as the judge's fallback."""

from __future__ import annotations

import re
import string
import unicodedata
from decimal import Decimal
from enum import StrEnum

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_NUMBER = re.compile(r"(?<![\w.,])([-+]?)((?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)(?![\w]|[.,][0-9])")
"""A number with optional sign, thousands separators and decimals, standing alone (not inside a word or date)."""


class RuleScorer(StrEnum):
    EXACT_MATCH = "exact_match"
    ANLS = "anls"


def _canonical_number(match: re.Match[str]) -> str:
    sign, digits = match.group(1), match.group(2).replace(",", "")
    value = Decimal(digits)
    text = format(value.normalize(), "f") if value != value.to_integral_value() else str(int(value))
    return f" {'-' if sign == '-' and value != 0 else ''}{text} "


def normalize_answer(text: str) -> str:
    """SQuAD's normalization (lower-case, punctuation deleted, English articles dropped, whitespace collapsed),
    after NFKC and with numbers made canonical first: `3,000` = `3000`, `3.0` = `3`, `-2.50` = `-2.5`."""
    text = unicodedata.normalize("NFKC", text).lower()
    parts = _NUMBER.split(text)
    # split() with two groups yields [text, sign, digits, text, sign, digits, ..., text].
    pieces = []
    for index in range(0, len(parts), 3):
        pieces.append(parts[index].translate(_PUNCTUATION))
        if index + 2 < len(parts):
            pieces.append(_canonical_number(_NUMBER.fullmatch(parts[index + 1] + parts[index + 2])))
    return " ".join(_ARTICLES.sub(" ", "".join(pieces)).split())


def exact_match(prediction: str, reference: str) -> float:
    return 1.0 if normalize_answer(prediction) == normalize_answer(reference) else 0.0


def anls_normalize(text: str) -> str:
    """DocVQA's ANLS normalization: lower-case, surrounding whitespace stripped, inner whitespace collapsed."""
    return " ".join(text.strip().lower().split())


def levenshtein(a: str, b: str) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def anls(prediction: str, reference: str, threshold: float = 0.5) -> float:
    """Average normalized Levenshtein similarity as DocVQA defines it: 1 - NLD when NLD < threshold, else 0."""
    pred, ref = anls_normalize(prediction), anls_normalize(reference)
    if not pred and not ref:
        return 1.0
    distance = levenshtein(pred, ref) / max(len(pred), len(ref))
    return 1.0 - distance if distance < threshold else 0.0


def rule_based_score(prediction: str, reference: str, scorer: RuleScorer | str) -> float:
    scorer = RuleScorer(scorer)
    if scorer is RuleScorer.EXACT_MATCH:
        return exact_match(prediction, reference)
    return anls(prediction, reference)
