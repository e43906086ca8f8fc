"""The demo's table: its figures are the evaluation harness's own summary, column by column."""

from unidoc_rl.demo import TABLE_COLUMNS, format_table, table_row


def test_table_rows_are_read_from_the_harness_summary():
    overall = {
        "accuracy": {"mean": 0.31249, "ci95": [0.1, 0.5]},
        "reward": {"format": 0.9, "score": 0.412345},
        "metrics": {
            "invalid_rate": 0.05,
            "ndcg": 0.5,
            "gold_shown": 0.25,
            "gold_selection": 0.75,
            "crop_rate": 0.0,
            "gold_crop_f1": None,
        },
    }
    row = table_row(overall)
    assert row == {
        "format": 0.9,
        "invalid rate": 0.05,
        "retrieval NDCG": 0.5,
        "gold shown": 0.25,
        "selection when gold shown": 0.75,
        "crop rate": 0.0,
        "gold crop F1": None,
        "accuracy": 0.312,
        "mean reward": 0.412,
    }
    assert [title for title, _ in TABLE_COLUMNS] == list(row)
    lines = format_table({"after SFT": row}).splitlines()
    assert {line.count("|") for line in lines} == {len(row) + 2}  # a well-formed Markdown table: no '|' in a title
    assert lines[0].startswith("| policy | format |") and lines[2] == (
        "| after SFT | 0.900 | 0.050 | 0.500 | 0.250 | 0.750 | 0.000 | — | 0.312 | 0.412 |"
    )


def test_progress_line_is_the_latest_matching_fragment_of_the_log(tmp_path):
    import re

    from unidoc_rl.demo import VERL_PROGRESS, last_progress_line

    log = tmp_path / "train.log"
    log.write_text("warming up\nTraining Progress:  25%| 1/4\rTraining Progress:  50%| 2/4\nRay warning\n")
    assert last_progress_line(log) == "Ray warning"
    assert last_progress_line(log, VERL_PROGRESS) == "Training Progress:  50%| 2/4"
    assert last_progress_line(log, re.compile("never")) == "(starting)"
