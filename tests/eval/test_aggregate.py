"""Summaries on hand-built result lines with hand-computed values: categories, intervals, pass@k, F1."""

from __future__ import annotations

import math

import pytest

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.episode_log import EpisodeLogLine
from unidoc_rl.eval.aggregate import bootstrap_interval, pass_at_k, summarize


def result(
    benchmark,
    uid,
    accuracy,
    categories,
    index=0,
    recall=None,
    turns=2,
    finish="answered",
    native=None,
    reference="x",
    fallback=False,
):
    line = {
        "schema": 1,
        "episode": EpisodeRecord(uid=uid).to_dict(),
        "key": f"{benchmark}/{uid}/{index}",
        "benchmark": benchmark,
        "uid": uid,
        "sample_index": index,
        "categories": categories,
        "ground_truth": {"query": f"{uid}?", "reference_answer": reference},
        "accuracy": accuracy,
        "judge": {"score": accuracy, "fallback": fallback, "source": "fallback" if fallback else "judge"},
        "native": native or {},
        "metrics": {"recall@1": recall, "turns": turns, "finish_reason": finish},
        "tokens": {"prompt": 10, "response": 20, "model": 5, "total": 30},
        "latency_s": 1.0,
    }
    return EpisodeLogLine.from_dict(line).to_dict()  # as the evaluation runner writes it (empty fields left out)


@pytest.fixture
def fixture_results():
    return [
        result("slidevqa", "a", 1.0, {"hop": ["single-hop"]}, recall=1.0),
        result("slidevqa", "b", 0.0, {"hop": ["single-hop"]}, recall=0.0, finish="max_turns"),
        result("slidevqa", "c", 1.0, {"hop": ["multi-hop"]}, recall=0.5),
        result("slidevqa", "d", 0.0, {"hop": ["multi-hop"]}, recall=None, fallback=True),
        result("slidevqa", "e", 1.0, {"hop": ["multi-hop"]}, recall=1.0, turns=5),
        # A question under two sources counts once under each.
        result(
            "mmlongbench",
            "m1",
            1.0,
            {"evidence_source": ["chart", "table"]},
            native={"mmlb_pred": "8", "mmlb_score": 1.0},
            reference="8",
        ),
        result(
            "mmlongbench",
            "m2",
            0.0,
            {"evidence_source": ["chart"]},
            native={"mmlb_pred": "Not answerable", "mmlb_score": 0.0},
            reference="5",
        ),
        result(
            "mmlongbench",
            "m3",
            1.0,
            {"evidence_source": []},
            native={"mmlb_pred": "Not answerable", "mmlb_score": 1.0},
            reference="Not answerable",
        ),
    ]


def test_category_tables_match_hand_computed_values(fixture_results):
    summary = summarize(fixture_results)
    slides = summary["benchmarks"]["slidevqa"]
    assert slides["all"]["accuracy"]["mean"] == pytest.approx(3 / 5)
    hops = slides["categories"]["hop"]
    assert (hops["single-hop"]["questions"], hops["single-hop"]["accuracy"]["mean"]) == (2, 0.5)
    assert (hops["multi-hop"]["questions"], hops["multi-hop"]["accuracy"]["mean"]) == (3, pytest.approx(2 / 3))
    assert hops["multi-hop"]["metrics"]["recall@1"] == pytest.approx(0.75)  # None (no evidence) left out
    assert hops["multi-hop"]["metrics"]["turns"] == pytest.approx(3.0)
    assert hops["single-hop"]["finish_reasons"] == {"answered": 0.5, "max_turns": 0.5}
    assert hops["multi-hop"]["judge_fallbacks"] == 1
    sources = summary["benchmarks"]["mmlongbench"]["categories"]["evidence_source"]
    assert sorted(sources) == ["chart", "table"]
    assert (sources["chart"]["questions"], sources["chart"]["accuracy"]["mean"]) == (2, 0.5)
    assert (sources["table"]["questions"], sources["table"]["accuracy"]["mean"]) == (1, 1.0)
    native = summary["benchmarks"]["mmlongbench"]["all"]["native"]
    assert native["mmlb_score"]["mean"] == pytest.approx(2 / 3)
    # recall: 1 of 2 answerable; precision: 1 of 1 prediction that is not "Not answerable"
    assert native["mmlb_f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert summary["overall"]["questions"] == 8
    assert summary["overall"]["accuracy"]["mean"] == pytest.approx(5 / 8)


def test_bootstrap_interval_properties():
    values = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_interval(values)
    assert low < 0.3 < high and (low, high) == bootstrap_interval(values)  # fixed seed
    assert 0.15 < low and high < 0.45
    narrow = bootstrap_interval(values * 10)
    assert narrow[1] - narrow[0] < (high - low) / 2
    assert bootstrap_interval([1.0, 1.0]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def test_pass_at_k_and_per_question_accuracy():
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 1, 4) == 1.0
    results = [result("vidoseek", "q1", acc, {}, index=i) for i, acc in enumerate([1.0, 0.0, 0.0, 0.0])]
    results += [result("vidoseek", "q2", 0.0, {}, index=i) for i in range(4)]
    group = summarize(results)["benchmarks"]["vidoseek"]["all"]
    assert (group["episodes"], group["questions"]) == (8, 2)
    assert group["accuracy"]["mean"] == pytest.approx(0.125)
    assert group["pass@k"]["1"]["mean"] == pytest.approx(0.125)
    assert group["pass@k"]["2"]["mean"] == pytest.approx(0.25)
    assert group["pass@k"]["4"]["mean"] == pytest.approx(0.5)


def test_evidence_metrics_are_averaged_per_question_with_intervals():
    # Question q1 has two samples (gold selection 1 and undefined: its search showed no gold page), q2 two samples
    # (0 and 0.5), q3 one sample with no defined value. Per question: q1 1.0, q2 0.25, q3 left out -> mean 0.625,
    # where a mean over episodes would give 0.5.
    lines = []
    for uid, values in (("q1", (1.0, None)), ("q2", (0.0, 0.5)), ("q3", (None,))):
        for index, value in enumerate(values):
            line = result("slidevqa", uid, 0.0, {}, index=index)
            line["metrics"]["gold_selection"] = value
            lines.append(line)
    overall = summarize(lines)["overall"]
    assert overall["metrics"]["gold_selection"] == pytest.approx(0.625)
    assert overall["metrics_ci95"]["gold_selection"] == list(bootstrap_interval([1.0, 0.25]))
    assert overall["metrics"]["gold_crop_f1"] is None and overall["metrics_ci95"]["gold_crop_f1"] is None
    # Behaviour stays a mean over episodes.
    assert overall["metrics"]["turns"] == 2.0


def test_results_without_categories_summarize_with_no_category_tables():
    summary = summarize([result("sample", "a", 1.0, {}), result("sample", "b", 0.0, {})])
    assert summary["benchmarks"]["sample"]["categories"] == {}
    assert summary["benchmarks"]["sample"]["all"]["accuracy"]["mean"] == 0.5
