"""Bad inputs get clear errors; comparison tables of runs."""

from __future__ import annotations

import json

import pytest

from unidoc_rl.eval.report import comparison, write_comparison
from unidoc_rl.eval.samples import SampleError, load_eval_samples


def test_every_bad_sample_is_listed_in_one_error(tmp_path):
    good = {
        "uid": "a",
        "query": "q?",
        "reference_answer": "x",
        "meta_info": {"file_name": "d.pdf", "reference_page": [1]},
    }
    samples = [
        good,
        {**good, "uid": "b", "meta_info": {"file_name": "d.pdf", "reference_page": [0]}},
        {**good, "uid": "c", "query": "  "},
        {"uid": "d", "query": "q?"},
        good,
    ]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(samples))
    with pytest.raises(SampleError) as error:
        load_eval_samples([path])
    problems = error.value.problems
    assert list(problems) == [
        "bench.json#1 (uid b)",
        "bench.json#2 (uid c)",
        "bench.json#3 (uid d)",
        "bench.json#4 (uid a)",
    ]
    assert "1-indexed" in problems["bench.json#1 (uid b)"][0]
    assert "missing reference_answer, meta_info" in problems["bench.json#3 (uid d)"][0]
    assert "duplicate uid" in problems["bench.json#4 (uid a)"][0]


def _summary(overall: float, benchmarks: dict[str, float]) -> dict:
    return {
        "overall": {"accuracy": {"mean": overall, "ci95": [overall, overall]}},
        "benchmarks": {name: {"all": {"accuracy": {"mean": v, "ci95": [v, v]}}} for name, v in benchmarks.items()},
    }


def test_compare_runs_side_by_side_with_paper_rows(tmp_path):
    for name, summary in (
        ("step100", _summary(0.5, {"slidevqa": 0.6, "vidoseek": 0.4})),
        ("step200", _summary(0.7, {"slidevqa": 0.8})),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    paper = tmp_path / "paper.json"
    paper.write_text(json.dumps([{"name": "UniDoc-RL 7B (paper)", "overall": 0.748, "slidevqa": 0.9}]))
    headers, rows = comparison([tmp_path / "step100", tmp_path / "step200"], paper)
    assert headers == ["run", "overall", "slidevqa", "vidoseek"]
    assert rows == [["step100", 0.5, 0.6, 0.4], ["step200", 0.7, 0.8, None], ["UniDoc-RL 7B (paper)", 0.748, 0.9, None]]
    write_comparison([tmp_path / "step100", tmp_path / "step200"], tmp_path / "out", paper)
    assert "| step200 | 0.700 | 0.800 | - |" in (tmp_path / "out" / "compare.md").read_text()
    assert (tmp_path / "out" / "compare.csv").read_text().splitlines()[1] == "step100,0.5,0.6,0.4"
    paper.write_text(json.dumps({"slidevqa": 0.9}))
    with pytest.raises(ValueError, match="expected a JSON list"):
        comparison([tmp_path / "step100"], paper)
