"""The viewer's data layer without a browser: byte-offset index, list queries, turn timeline, crops, run data."""

import json

import pytest
from PIL import Image

from unidoc_rl.env.episode import ActionKind
from unidoc_rl.viewer.index import EpisodeIndex
from unidoc_rl.viewer.query import ListQuery, QueryError, run_query
from unidoc_rl.viewer.records import RecordError, SampleInfo, load_samples_info, parse_entry, summarize
from unidoc_rl.viewer.run_data import read_metrics, read_summaries, summary_rows
from unidoc_rl.viewer.sample_run import REPO


def uids_and_lines(page):
    return [(row.source, row.line) for row in page.rows]


def test_index_reads_both_logs_with_offsets(viewer, fixture_run):
    index = viewer.index
    assert [log.label for log in index.logs] == ["trajectories.jsonl", "eval/global_step_20/results.jsonl"]
    assert len(index.rows) == 8 and not index.bad_lines
    for built, row in zip(fixture_run.training, index.logs[0].rows, strict=True):
        assert row.uid == built.record.uid
        assert index.read_line(0, row.line)["reward"] == built.line["reward"]
        assert row.reward == built.line["reward"]["score"]
    eval_row = index.logs[1].rows[0]
    assert eval_row.categories == ("benchmark: sample", "query_type: single-hop", "source_type: table")
    assert eval_row.correct is True and index.logs[1].rows[1].correct is False


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"finish": ["max_turns"]}, [(0, 5)]),
        ({"finish": ["max_images"]}, [(0, 4)]),
        ({"text": ["CYCLES"]}, [(0, 3), (0, 4), (0, 5), (1, 1)]),
        ({"correct": ["yes"]}, [(0, 0), (0, 3), (1, 0)]),
        ({"answered": ["no"]}, [(0, 5)]),
        ({"metric": ["crop"], "min": ["0.5"], "max": ["0.9"]}, [(0, 3)]),
        ({"step_min": ["2"]}, [(0, 3), (0, 4), (0, 5)]),
        ({"category": ["source_type: table"]}, [(1, 0), (1, 1)]),
        ({"source": ["1"]}, [(1, 0), (1, 1)]),
        ({"sort": ["reward"], "order": ["desc"], "per_page": ["3"]}, [(0, 0), (1, 0), (0, 3)]),
        ({"sort": ["line"], "per_page": ["3"], "page": ["3"]}, [(1, 0), (1, 1)]),
    ],
)
def test_list_query_filters_sorts_and_pages(viewer, params, expected):
    page = run_query(viewer.index.rows, ListQuery.from_params(params))
    assert uids_and_lines(page) == expected


def test_list_query_rejects_bad_parameters():
    with pytest.raises(QueryError, match="min"):
        ListQuery.from_params({"min": ["lots"]})
    with pytest.raises(QueryError, match="per_page"):
        ListQuery.from_params({"per_page": ["100000"]})
    with pytest.raises(QueryError, match="answered"):
        ListQuery.from_params({"answered": ["maybe"]})


def test_index_follows_a_growing_log_and_a_truncated_one(tmp_path, fixture_run):
    lines = (fixture_run.run_dir / "trajectories.jsonl").read_text().splitlines(keepends=True)
    run = tmp_path / "run"
    run.mkdir()
    log = run / "trajectories.jsonl"
    log.write_text(lines[0] + "not json\n" + lines[1][:50])  # a bad line, and a line still being written
    index = EpisodeIndex(run)
    assert [row.line for row in index.rows] == [0]
    assert [(bad.line, "JSON" in bad.reason or "Expecting" in bad.reason) for bad in index.bad_lines] == [(2, True)]
    with open(log, "a") as handle:
        handle.write(lines[1][50:] + lines[2])
    index.refresh()
    assert [row.line for row in index.rows] == [0, 2, 3]
    assert index.read_line(0, 3)["episode"]["uid"] == "nw-asia-2023"
    log.write_text(lines[3])  # a resumed run rewrote its log shorter
    index.refresh()
    assert [(row.line, row.uid) for row in index.rows] == [(0, "lb-summer-cycles")] and not index.bad_lines


def test_line_without_episode_is_reported_not_fatal(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text('{"schema": 1, "uid": "x"}\n[1, 2]\n{"uid": "x"}\n')
    index = EpisodeIndex(run)
    assert index.rows == []
    assert [bad.reason for bad in index.bad_lines] == [
        "no `episode` object in the line",
        "a line must be a JSON object, got list",
        "schema must be 1, got None (a line of an older writer?)",
    ]


def breakdown(**values) -> dict:
    fields = dict.fromkeys(("score", "format", "retrieval", "selection", "crop", "answer"), 0.0)
    flags = {"judge_called": False, "judge_fallback": False, "judge_cached": False}
    return {**fields, **flags, "search_failures": 0, "forced_answer": False, **values}


ANSWERED = {
    "uid": "q1",
    "question": "Q?",
    "actions": ["search", "answer"],
    "answer": "7",
    "finish_reason": "answered",
    "num_turns": 2,
}


def test_evaluation_line_categories_and_correctness():
    line = {
        "schema": 1,
        "uid": "q1",
        "benchmark": "slidevqa",
        "categories": {"evidence": ["chart", "table"]},
        "episode": ANSWERED,
        "reward": breakdown(score=0.9, answer=0.0, format=1.0),
        "judge": {"score": 1.0, "fallback": False, "source": "judge"},
    }
    row = summarize(line, 0, 0, 0, SampleInfo())
    assert row.reward == 0.9 and row.components["format"] == 1.0
    assert row.categories == ("benchmark: slidevqa", "evidence: chart", "evidence: table")
    assert row.answered is True and row.correct is True  # the judge's verdict, not the gated answer reward
    line["judge"]["score"] = 0.0
    assert summarize(line, 0, 0, 0, SampleInfo()).correct is False
    del line["judge"]  # no verdict: the answer reward decides
    assert summarize(line, 0, 0, 0, SampleInfo()).correct is False


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"components": {"format": 1.0}}, "unknown fields ['components']"),
        ({"verdict": 1.0}, "unknown fields ['verdict']"),
        ({"reward": 0.5}, "reward must be an object (the reward breakdown), got 0.5"),
        ({"reward": {"score": 0.5}}, "reward lacks ['answer', 'crop', 'format',"),
        ({"reward": breakdown(total=0.5)}, "reward has unknown fields ['total']"),
        ({"judge": "correct"}, "judge must be an object"),
        ({"categories": {"hop": "multi"}}, "categories.hop must be a list of strings"),
        ({"step": "3"}, "step must be an integer"),
        ({"schema": 2}, "schema must be 1, got 2"),
    ],
)
def test_other_line_shapes_are_refused_with_the_field_named(change, reason):
    line = {"schema": 1, "uid": "q1", "episode": ANSWERED, **change}
    with pytest.raises(RecordError) as error:
        summarize(line, 0, 0, 0, SampleInfo())
    assert str(error.value).startswith(reason)


def test_samples_file_supplies_ground_truth_and_categories():
    info = load_samples_info(REPO / "examples" / "samples.json")
    assert info.truths["nw-asia-2023"].reference_answer == "845"
    assert info.categories["nw-asia-2023"] == ("query_type: single-hop", "source_type: table")
    line = {"schema": 1, "uid": "nw-asia-2023", "step": 1, "episode": {"turns": [], "finish_reason": "no_action"}}
    entry = parse_entry(line, info)
    assert entry.reference_answer == "845" and entry.record.question.startswith("What was Northwind")


def test_timeline_attaches_steps_to_turns(viewer):
    good = viewer.timeline(0, 0)
    assert [view.kind for view in good] == [ActionKind.SEARCH, ActionKind.SELECT, ActionKind.BBOX, ActionKind.ANSWER]
    search = good[0]
    assert [(c.position, c.rank, c.score, c.selected, c.gold) for c in search.candidates] == [
        (0, 1, 0.912, True, True),
        (1, 2, 0.554, False, False),
        (2, 3, 0.418, False, False),
    ]
    assert good[1].focus.page_id == "northwind_annual_report_2023_2" and good[1].focus.model_boxes == []
    crop = good[2].focus
    assert crop.crop == (0, 0) and len(crop.model_boxes) == 1 and len(crop.gold_boxes) == 1
    assert crop.recomputed_size == crop.zoom_size

    failed = viewer.timeline(0, 4)
    assert failed[0].search.failed and failed[0].candidates == []
    assert [c.page_id for c in failed[1].candidates] == [
        "lakeside_battery_study_1",
        "lakeside_battery_study_2",
        "northwind_annual_report_2023_3",
    ]
    assert failed[3].turn.forced

    invalid = viewer.timeline(0, 2)
    assert invalid[0].kind is ActionKind.INVALID and invalid[0].search is None
    assert invalid[1].search.query == "Northwind revenue by region 2023"


def test_crop_is_recomputed_as_the_model_got_it(viewer, fixture_run):
    record = fixture_run.training[3].record
    crop = record.searches[0].crops[0]
    png = viewer.crop_png(0, 3, 0, 0)
    import io

    image = Image.open(io.BytesIO(png))
    assert image.size == crop.zoom_size and len(crop.boxes_raw) == 2


def test_run_data_groups_metrics_and_reads_summaries(fixture_run):
    metrics = read_metrics(fixture_run.run_dir / "metrics.jsonl")
    groups = dict(metrics.groups())
    assert set(groups["Reward"]) == {"train/reward", "val/reward"}
    assert set(groups["Reward components (train)"]) == {
        f"train/reward/{name}" for name in ("format", "retrieval", "selection", "crop", "answer")
    }
    assert list(groups["Reward components (validation)"]) == ["val/reward/answer"]
    assert list(groups["Reward spread within GRPO groups"]) == ["train/reward/std_within_groups"]
    assert list(groups["KL"]) == ["actor/kl_loss"] and "actor/grad_norm" in groups
    assert set(groups["Judge calls, failed searches, forced answers"]) == {
        "train/reward/judge_fallback",
        "train/reward/search_failures",
    }
    assert list(groups["Episode outcomes (share of episodes)"]) == ["train/agent/crop_rate"]
    assert list(groups["Turns"]) == ["train/agent/turns"]
    assert "train/reward/score" not in {name for _, charted in groups.items() for name in charted}
    assert len(groups["Reward"]["val/reward"]) == 2
    summaries = read_summaries(fixture_run.run_dir)
    assert [(s.label, s.step) for s in summaries] == [("eval/global_step_10", 10), ("eval/global_step_20", 20)]
    table = {row.label: row for row in summaries[1].rows}
    assert table["sample / table"].accuracy == pytest.approx(0.71)
    assert (table["sample / table"].low, table["sample / table"].high) == pytest.approx((0.61, 0.80))
    assert table["sample"].count == 200 and table["sample"].rates["invalid_action_rate"] == 0.05


def test_summary_rows_read_percentages_and_split_intervals():
    rows = summary_rows(
        {
            "mmlong": {
                "per_category": [{"category": "chart", "accuracy": 64.0, "ci_low": 60.0, "ci_high": 68.0, "count": 50}]
            }
        }
    )
    assert [(r.label, r.accuracy, r.low, r.high, r.count) for r in rows] == [
        ("mmlong / chart", pytest.approx(0.64), pytest.approx(0.60), pytest.approx(0.68), 50)
    ]


def test_unreadable_metrics_lines_are_counted(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "train/reward": 0.5}) + "\n{oops\n" + json.dumps({"x": 1}) + "\n")
    log = read_metrics(path)
    assert log.series == {"train/reward": [(1.0, 0.5)]} and len(log.bad_lines) == 2


def test_verl_file_logger_lines_are_read_as_flat_metrics(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "data": {"critic/score/mean": 0.25, "actor/pg_loss": -0.5}}, {"step": 2, "data": {}}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = read_metrics(path)
    assert log.series == {"critic/score/mean": [(1.0, 0.25)], "actor/pg_loss": [(1.0, -0.5)]} and not log.bad_lines


def test_the_verl_plugins_metrics_are_charted_like_the_local_trainers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    data = {
        "critic/score/mean": 0.25,
        "unidoc/reward/format": 1.0,
        "unidoc/reward/score": 0.25,
        "unidoc/reward/std_within_groups": 0.1,
        "unidoc/reward/judge_fallback": 0.0,
        "unidoc/agent/turns": 3.0,
        "unidoc/agent/invalid_actions": 0.5,
    }
    path.write_text(json.dumps({"step": 1, "data": data}) + "\n")
    groups = dict(read_metrics(path).groups())
    assert list(groups["Reward"]) == ["critic/score/mean"]
    assert list(groups["Reward components (train)"]) == ["unidoc/reward/format"]
    assert list(groups["Reward spread within GRPO groups"]) == ["unidoc/reward/std_within_groups"]
    assert list(groups["Judge calls, failed searches, forced answers"]) == ["unidoc/reward/judge_fallback"]
    assert list(groups["Actions per episode"]) == ["unidoc/agent/invalid_actions"]
    assert list(groups["Turns"]) == ["unidoc/agent/turns"]
    assert "unidoc/reward/score" not in {name for charted in groups.values() for name in charted}


def test_timeline_skips_unrendered_turns_and_reads_records_without_turns(viewer, fixture_run):
    from unidoc_rl.env.episode import EpisodeRecord, TurnStep
    from unidoc_rl.viewer.timeline import build_timeline

    truth = fixture_run.truths["nw-asia-2023"]
    record = EpisodeRecord.from_dict(fixture_run.training[0].record.to_dict())

    def sizes(page_id):
        return viewer.pages.sizes(page_id, record.page_sizes.get(page_id))

    # A search the model wrote first but whose results it never saw (say, an image budget ran out).
    record.turns.insert(0, TurnStep("<search>unseen</search>", ActionKind.SEARCH))
    views = build_timeline(record, truth, sizes)
    assert views[0].search is None and views[1].search.query == "Northwind revenue by region 2023"
    assert views[3].focus.crop == (0, 0)

    record.turns = []  # an older record: only the action kinds
    views = build_timeline(record, truth, sizes)
    assert [view.kind for view in views] == record.actions
    assert views[0].search is not None and views[2].focus.model_boxes == record.crops[0].boxes_display


def test_verl_trainer_line_without_ground_truth():
    line = {
        "schema": 1,
        "uid": "q",
        "step": 3,
        "group": "p3",
        "episode": {"uid": "q", "question": "Q?", "turns": [], "finish_reason": "max_turns"},
        "reward": breakdown(score=0.1, format=0.5, search_failures=1),
    }
    entry = parse_entry(line, SampleInfo())
    assert entry.reference_answer is None and entry.ground_truth is None and entry.step == 3
    row = summarize(line, 0, 0, 0, SampleInfo())
    assert row.correct is False and row.reward == 0.1 and row.components["search_failures"] == 1.0
    from unidoc_rl.viewer.query import order_components

    assert order_components(row.components) == ["format", "retrieval", "selection", "crop", "answer"]


def test_summary_rows_read_the_evaluation_harness_summary():
    summary = {
        "overall": {"episodes": 4, "accuracy": {"mean": 0.75, "ci95": [0.5, 1.0]}},
        "benchmarks": {
            "slidevqa": {
                "all": {"episodes": 4, "accuracy": {"mean": 0.75, "ci95": [0.5, 1.0]}},
                "categories": {
                    "query_type": {"multi-hop": {"episodes": 2, "accuracy": {"mean": 0.5, "ci95": [0.0, 1.0]}}}
                },
            }
        },
    }
    rows = {row.label: row for row in summary_rows(summary)}
    assert (rows["overall"].accuracy, rows["overall"].low, rows["overall"].high) == (0.75, 0.5, 1.0)
    multi_hop = next(row for label, row in rows.items() if label.endswith("multi-hop"))
    assert (multi_hop.accuracy, multi_hop.count) == (0.5, 2)


def test_evaluation_lines_show_reward_components_and_evidence_metrics():
    line = {
        "schema": 1,
        "uid": "q1",
        "benchmark": "slidevqa",
        "episode": ANSWERED,
        "reward": breakdown(score=0.3, format=1.0, selection=1.0, crop=1.0, judge_called=True),
        "judge": {"score": 0.0, "fallback": False, "source": "judge"},
        "metrics": {"gold_shown": 0.0, "gold_selection": None, "gold_crop_f1": 0.0, "turns": 3.0},
    }
    row = summarize(line, 0, 0, 0, SampleInfo())
    assert row.reward == 0.3 and row.components["selection"] == 1.0
    assert row.evidence == {"gold_shown": 0.0, "gold_crop_f1": 0.0}  # undefined and non-evidence keys left out
    entry = parse_entry(line, SampleInfo())
    assert entry.evidence == row.evidence and entry.correct is False


def test_summary_rows_show_evidence_metrics_and_labelled_reward_components():
    summary = {
        "overall": {
            "episodes": 2,
            "accuracy": {"mean": 0.5, "ci95": [0.0, 1.0]},
            "metrics": {"gold_selection": 0.25, "gold_crop_f1": None, "turns": 3.0},
            "reward": {"score": 0.3, "selection": 1.0},
        }
    }
    (row,) = summary_rows(summary)
    assert row.rates == {"gold_selection": 0.25, "reward score": 0.3, "reward selection": 1.0}
