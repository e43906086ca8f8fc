"""Ground truth parsing (incl. a real parquet round trip), rule-based answer scoring and verdict parsing."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unidoc_rl.judge.verdict import VerdictParseError, parse_verdict
from unidoc_rl.rewards.answer_match import anls, exact_match, normalize_answer
from unidoc_rl.rewards.ground_truth import GroundTruth, GroundTruthError


def test_ground_truth_survives_a_parquet_round_trip(tmp_path, truth):
    rows = [
        {"data_source": "slidevqa", "reward_model": {"style": "rule", "ground_truth": truth.to_dict()}},
        {
            "data_source": "slidevqa",
            "reward_model": {
                "style": "rule",
                "ground_truth": {"query": "q", "reference_answer": "a", "gold_pages": [{"page_id": "deck_2"}]},
            },
        },
    ]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = pq.read_table(path).to_pylist()
    assert GroundTruth.from_dict(loaded[0]["reward_model"]["ground_truth"]) == truth
    second = GroundTruth.from_dict(loaded[1]["reward_model"]["ground_truth"])
    assert second.gold_page_ids == ("deck_2",)
    assert second.boxes_for("deck_2") == ()
    assert second.requires_crop("deck_2") is False


def test_ground_truth_fields(truth):
    assert truth.gold_page_ids == ("report_3", "report_7")
    assert truth.boxes_for("report_3") == ((100.0, 100.0, 500.0, 300.0),)
    assert truth.requires_crop("report_3") and not truth.requires_crop("report_7")
    assert not truth.requires_crop("report_99")


def test_ground_truth_string_and_extra_info_query():
    parsed = GroundTruth.from_dict("Paris", {"question": "Capital of France?"})
    assert (parsed.reference_answer, parsed.query, parsed.gold_page_ids) == ("Paris", "Capital of France?", ())


@pytest.mark.parametrize(
    ("ground_truth", "message"),
    [
        (42, "must be a mapping or a string"),
        ({"query": "q"}, "reference_answer must be a string"),
        ({"reference_answer": "a", "gold_pages": "doc_1"}, "gold_pages must be a list"),
        ({"reference_answer": "a", "gold_pages": [{"page_id": ""}]}, "page_id must be a non-empty string"),
        ({"reference_answer": "a", "gold_pages": [{"page_id": "d_1"}, {"page_id": "d_1"}]}, "listed twice"),
        ({"reference_answer": "a", "gold_pages": [{"page_id": "d_1", "boxes": [[1, 2, 3]]}]}, "4 coordinates"),
        ({"reference_answer": "a", "gold_pages": [{"page_id": "d_1", "boxes": [[5, 2, 3, 9]]}]}, "x1 < x2"),
        ({"reference_answer": "a", "gold_pages": [{"page_id": "d_1", "boxes": [[0, 0, 10, 1001]]}]}, "<= 1000"),
        ({"reference_answer": "a", "gold_pages": [{"page_id": "d_1", "crop_required": True}]}, "no gold boxes"),
    ],
)
def test_bad_ground_truth_is_rejected_with_a_message(ground_truth, message):
    with pytest.raises(GroundTruthError, match=message):
        GroundTruth.from_dict(ground_truth)


MATCHING_PAIRS = [
    ("3,000", "3000"),
    ("3.0", "3"),
    ("3.50", "3.5"),
    ("0.5", ".5"),
    ("1,234,567", "1234567"),
    ("$1,234.50", "1234.5"),
    ("42%", "42 %"),
    ("12.5 %", "12.5%"),
    ("-2.50", "-2.5"),
    ("U.S.", "US"),
    ("e-mail", "email"),
    ("The United States", "united states"),
    ("an apple", "Apple"),
    ("  42   Million. ", "42 million"),
    ("Paris!", "paris"),
    ("O'Neil", "ONeil"),
    ("(a) north", "North"),
    ("Ｆｕｌｌｗｉｄｔｈ", "fullwidth"),
    ("3 000", "3 000"),
    ("April 3, 2023", "april 3 2023"),
    ("7,500 MW", "7500 mw"),
    ("v1.2", "v12"),
]
NON_MATCHING_PAIRS = [
    ("3,000", "300"),
    ("3.05", "3.5"),
    ("-2", "2"),
    ("42", "43"),
    ("1,234", "12,340"),
    ("north", "south"),
    ("0.5", "5"),
    ("100%", "10%"),
    ("Apple Inc", "Apple"),
    ("US", "UK"),
]


@pytest.mark.parametrize(("a", "b"), MATCHING_PAIRS)
def test_exact_match_equivalences_hold_both_ways(a, b):
    assert exact_match(a, b) == exact_match(b, a) == 1.0


@pytest.mark.parametrize(("a", "b"), NON_MATCHING_PAIRS)
def test_exact_match_differences_hold_both_ways(a, b):
    assert exact_match(a, b) == exact_match(b, a) == 0.0


def test_normalized_exact_match_and_anls():
    assert normalize_answer("  The  Revenue: $42,000! ") == "revenue 42000"
    assert normalize_answer("-2.50 m and 3.0") == "-2.5 m and 3"
    # ANLS as DocVQA defines it: case and surrounding whitespace ignored, punctuation kept.
    assert anls("  42 MILLION ", "42 million") == 1.0
    assert anls("42 million.", "42 million") == pytest.approx(1 - 1 / 11)
    assert exact_match("42 Million.", "42 million") == 1.0
    assert exact_match("41 million", "42 million") == 0.0
    assert anls("42 millon", "42 million") == pytest.approx(0.9)  # one deletion over 10 characters
    assert anls("totally different", "42 million") == 0.0
    assert anls("", "") == 1.0


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("<judge>True</judge>", 1.0),
        ("<judge> false </judge>", 0.0),
        ("Reasoning... <judge>False</judge> wait, <judge>yes</judge>", 1.0),
        ("<JUDGE>correct.</JUDGE>", 1.0),
        ("<judge>0.25</judge>", 0.25),
        ('```json\n{"verdict": false}\n```', 0.0),
        ('{"score": 0.75}', 0.75),
        ('{"judge": "True"}', 1.0),
    ],
)
def test_verdicts_parse(reply, score):
    assert parse_verdict(reply) == score


@pytest.mark.parametrize(
    "reply", ["", None, "I think so", "<judge>maybe</judge>", '{"score": 7}', "<judge>nan</judge>"]
)
def test_garbage_verdicts_raise(reply):
    with pytest.raises(VerdictParseError):
        parse_verdict(reply)
