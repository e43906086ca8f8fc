"""The preset tables: one declaration, from which the total and the docs' formulas come."""

from pathlib import Path

import pytest

from unidoc_rl.rewards.presets import PRESETS, formula_text, get_preset, table_text, weighted_sum_text

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rewards.md"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_docs_state_the_declared_formula_and_table(name):
    docs = DOCS.read_text(encoding="utf-8")
    assert formula_text(PRESETS[name]) in docs
    assert table_text(PRESETS[name]) in docs


def test_formula_text_renders_weights_and_gates():
    assert formula_text(get_preset("unidoc")) == (
        "total = 0.6·answer + 0.1·(retrieval + selection + crop + format) when format ≥ 0.5, else 0; "
        "answer = 0 (not scored, judge not called) unless format ≥ 1"
    )
    assert weighted_sum_text(get_preset("vrag")) == "0.7·answer + 0.2·retrieval + 0.1·format"
    assert weighted_sum_text(get_preset("vrag").with_weights({"selection": 0.1})) == (
        "0.7·answer + 0.2·retrieval + 0.1·(selection + format)"
    )


def test_combine_is_the_weighted_sum_of_the_rows():
    unidoc = get_preset("unidoc").with_weights({"answer": 0.5, "crop": 0.0})
    assert unidoc.weights == {"answer": 0.5, "retrieval": 0.1, "selection": 0.1, "crop": 0.0, "format": 0.1}
    # 0.5*1 + 0.1*0.5 + 0.1*1 + 0*1 + 0.1*1 = 0.75
    assert unidoc.combine(format=1.0, retrieval=0.5, selection=1.0, crop=1.0, answer=1.0) == pytest.approx(0.75)
    assert unidoc.combine(format=0.4, retrieval=1.0, selection=1.0, crop=1.0, answer=1.0) == 0.0
    with pytest.raises(ValueError, match="must be >= 0"):
        get_preset("vrag").with_weights({"crop": -1})


def test_every_row_names_a_reported_metric_and_a_real_function():
    import importlib
    from dataclasses import fields

    from unidoc_rl.rewards.presets import COMPONENTS, FUNCTIONS
    from unidoc_rl.rewards.scorer import RewardBreakdown

    assert set(COMPONENTS) <= {f.name for f in fields(RewardBreakdown)}  # each component is its own metric
    for name in COMPONENTS:
        for reference in FUNCTIONS[name].split(" or ")[-1:]:
            module, function = reference.split(".")
            assert callable(getattr(importlib.import_module(f"unidoc_rl.rewards.{module}"), function))
