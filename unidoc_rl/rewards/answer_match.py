"""Rule-based answer scoring: normalized exact match and ANLS. Used without a judge and as the judge's fallback."""

from __future__ import annotations

import re
import string
import unicodedata
from enum import StrEnum

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans({char: " " for char in string.punctuation})


class RuleScorer(StrEnum):
    EXACT_MATCH = "exact_match"
    ANLS = "anls"


def normalize_answer(text: str) -> str:
    """Lower-case, NFKC, punctuation to spaces, English articles dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return 1.0 if normalize_answer(prediction) == normalize_answer(reference) else 0.0


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
    """Average normalized Levenshtein similarity (DocVQA): 1 - NLD when NLD < threshold, else 0."""
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if not pred and not ref:
        return 1.0
    distance = levenshtein(pred, ref) / max(len(pred), len(ref))
    return 1.0 - distance if distance < threshold else 0.0


def rule_based_score(prediction: str, reference: str, scorer: RuleScorer | str) -> float:
    scorer = RuleScorer(scorer)
    if scorer is RuleScorer.EXACT_MATCH:
        return exact_match(prediction, reference)
    return anls(prediction, reference)
