"""MMLongBench-Doc's scoring rules on the shared records' answer formats, and SlideVQA's EM/F1."""

from __future__ import annotations

import json

import pytest

from unidoc_rl.eval import mmlongbench as mmlb
from unidoc_rl.eval import slidevqa


@pytest.fixture(scope="module")
def records(repo_root):
    path = repo_root.parent / "shared" / "benchmarks" / "MMLongBench-Doc" / "samples_first700.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return json.loads(path.read_text())


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def test_gold_answers_score_one_against_themselves_by_format(records):
    """Every gold answer, passed through the extraction, scores 1 under its format's rule, except Int golds that
    are not integers ("21%", "yes"), which the official rule always scores 0."""
    for record in records:
        fmt, gold = record["answer_format"], record["answer"]
        score = mmlb.score_answer(gold, mmlb.extract_answer(gold, fmt), fmt)
        expected = 0.0 if fmt == "Int" and not _is_int(gold) else 1.0
        assert score == expected, (fmt, gold)
    assert any(r["answer_format"] == "Int" and not _is_int(r["answer"]) for r in records)


@pytest.mark.parametrize(
    ("gold", "answer", "fmt", "score"),
    [
        ("8", "There are 8 references.", "Int", 1.0),
        ("8", "8.0", "Int", 1.0),
        ("8", "eight", "Int", 0.0),
        ("18.29%", "18.29", "Float", 1.0),
        ("18.29%", "0.1829", "Float", 1.0),  # gold/100
        ("18.29%", "18.3%", "Float", 1.0),  # within 1%
        ("18.29%", "19", "Float", 0.0),
        ("0.1", "10", "Float", 1.0),  # gold*100
        ("Less well-off", "less well-off", "Str", 1.0),
        ("Less well-off", "less well off", "Str", pytest.approx(1 - 1 / 13)),
        ("Less well-off", "better off", "Str", 0.0),
        ("2015-06-30", "2015-06-31", "Str", 0.0),  # exact-match string: no partial credit
        ("https://example.org/a", "https://example.org/a", "Str", 1.0),
        ("['White', '10%']", "10%, White", "List", 1.0),
        ("['White', '10%']", "['White']", "List", 0.0),  # lengths differ
        ("['The Economist', 'TIME']", "['time', 'The Economst']", "List", pytest.approx(1 - 1 / 13)),
        ("Not answerable", "The document does not say; it is not answerable.", "None", 1.0),
        ("Not answerable", "Berlin", "None", 0.0),
    ],
)
def test_scoring_rules(gold, answer, fmt, score):
    assert mmlb.score_answer(gold, mmlb.extract_answer(answer, fmt), fmt) == score


def test_clean_string():
    assert mmlb.clean_string('  "$1,200 (approx.)%"  ') == "1,200"
    assert mmlb.clean_string("'Kent'") == "kent"


def test_f1_over_not_answerable():
    golds = ["8", "Paris", "Not answerable", "Not answerable"]
    predictions = ["8", "Not answerable", "Not answerable", "Rome"]
    scores = [1.0, 0.0, 1.0, 0.0]
    # recall = 1 / 2 answerable; precision = 1 / 2 predictions that are not "Not answerable"
    assert mmlb.f1_not_answerable(golds, predictions, scores) == pytest.approx(0.5)
    assert mmlb.f1_not_answerable(["Not answerable"], ["Not answerable"], [1.0]) == 0.0


@pytest.mark.parametrize(
    ("prediction", "gold", "question", "em", "f1"),
    [
        ("12.5 bn", "12.5 bn", "How much?", 1.0, 1.0),
        ("The profit was 12.5 bn", "12.5 bn", "How much?", 0.0, pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))),
        ("3 people", "three", "In all, how many people came?", 1.0, 1.0),  # unit removed, number word mapped
        (
            "3 people",
            "three",
            "How many people came?",
            0.0,
            pytest.approx(2 / 3),
        ),  # the phrase test is case-sensitive, as released
        ("Yes, it grew", "yes", "Did it grow?", 1.0, 1.0),
        ("cats & dogs", "cats and dogs", "What animals?", 1.0, 1.0),
        ("10 percent", "10", "What share?", 1.0, 1.0),
        ("red", "blue", "Which colour?", 0.0, 0.0),
    ],
)
def test_slidevqa_em_f1(prediction, gold, question, em, f1):
    assert slidevqa.exact_match(prediction, gold, question) == em
    assert slidevqa.token_f1(prediction, gold, question) == f1
