"""SlideVQA's own QA metric: exact match and token F1 after the benchmark's answer normalization.

Normalization, in the order of the benchmark's `evaluate.py` (reimplemented here): lower case; text replacements
("this is ", "it is " and "percent" removed, "&" and every "and" to ",", organisation→organization,
"because of"/"because"/"due to" removed, hours→hrs, minites→min); when the question contains "how many" or
"which", the word that follows that phrase in the question (the unit) is removed once from the answer;
punctuation removed; articles removed; an answer starting with "yes"/"no" keeps its first word; whitespace
collapsed; number words zero..nineteen to digits.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_REPLACEMENTS = (
    ("this is ", ""),
    ("it is ", ""),
    ("&", ","),
    ("and", ","),
    ("percent", ""),
    ("organisation", "organization"),
    ("because of", ""),
    ("because", ""),
    ("due to", ""),
    ("hours", "hrs"),
    ("minites", "min"),
)
_NUMBER_WORDS = {
    word: str(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _unit_of(question: str) -> str | None:
    for phrase in ("how many", "which"):
        if phrase in question:
            following = question.split(phrase, 1)[1].split()
            if following:
                return following[0].lower().translate(_PUNCTUATION)
    return None


def normalize(answer: str, question: str = "") -> list[str]:
    text = answer.lower()
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    unit = _unit_of(question)
    if unit:
        text = re.sub(rf"\b{re.escape(unit)}\b", "", text, count=1)
    text = text.translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    if text.lstrip().startswith(("yes", "no")):
        text = text.split()[0]
    return [_NUMBER_WORDS.get(token, token) for token in text.split()]


def exact_match(prediction: str, gold: str, question: str = "") -> float:
    return float(normalize(prediction, question) == normalize(gold, question))


def token_f1(prediction: str, gold: str, question: str = "") -> float:
    predicted, reference = normalize(prediction, question), normalize(gold, question)
    common = sum((Counter(predicted) & Counter(reference)).values())
    if common == 0:
        return float(predicted == reference)
    precision, recall = common / len(predicted), common / len(reference)
    return 2 * precision * recall / (precision + recall)
