"""Run-level data: training curves from `metrics.jsonl` and evaluation summaries from `summary.json`.

`metrics.jsonl`: one JSON object per logged step, `step` plus numeric metrics (`train/…`, `val/…`, `actor/…`,
`timing/…` from the local trainer; verl's own names such as `critic/score/mean` or `response_length/mean` are
grouped too). Lines of verl's file logger (`trainer.logger=[file]`: `{"step": N, "data": {...}}`) are read the
same way. Charts are grouped by name pattern; every numeric metric not in a group gets its own chart.

`summary.json` (one per evaluated checkpoint; several may sit in sub-folders of the run): any nesting of objects,
where an object with a numeric `accuracy` (or `acc`) is one row (a benchmark, or a category of one) and its path of
keys is its label. Its interval is read from `ci`, `ci95`, `accuracy_ci`, `bootstrap_ci` or `interval` (a pair or
`{low, high}`), or from `ci_low`/`ci_high` or `lower`/`upper`; its other numeric fields (rates, turns, tokens) are
shown beside it. Accuracies in 0–100 are read as percentages. The checkpoint's step is the last number in its
folder name (`global_step_200` → 200), or a top-level `step`/`global_step`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from unidoc_rl.eval.evidence import EVIDENCE_METRICS
from unidoc_rl.viewer.index import find_files

_NOT_A_COMPONENT = r"(?!judge_|score$|search_failures$|forced_answer$|std_within_groups$)"
CHART_GROUPS: tuple[tuple[str, str], ...] = (
    ("Reward", r"(^|/)reward$|^critic/(score|rewards)/mean$"),
    ("Reward components (train)", rf"^(train|unidoc)/reward/{_NOT_A_COMPONENT}"),
    ("Reward components (validation)", rf"^val/reward/{_NOT_A_COMPONENT}"),
    ("Reward spread within GRPO groups", r"/reward/std_within_groups$"),
    ("Judge calls, failed searches, forced answers", r"/reward/(judge_|search_failures$|forced_answer$)"),
    ("Episode outcomes (share of episodes)", r"/agent/(crop_rate|answered|forced_answers)$"),
    ("Actions per episode", r"/agent/(invalid_actions|searches|search_failures)$"),
    ("KL", r"kl"),
    ("Entropy", r"entropy"),
    ("Response length (tokens)", r"response_(tokens|length)"),
    ("Turns", r"turns"),
)
"""Charts of metrics named by both trainers: `{prefix}/reward/{component}` and `{prefix}/agent/{behaviour}`, with
prefix `train`/`val` (local trainer) or `unidoc` (verl plugin); `unidoc_rl/training/step_metrics.py` names them."""
HIDDEN_METRICS = re.compile(r"/reward/score$")
"""The reward breakdown's total duplicates the reward itself."""
FILLER_KEYS = frozenset({"benchmarks", "categories", "per_category", "by_category", "category", "results", "overall"})
CI_PAIR_KEYS = ("ci", "ci95", "accuracy_ci", "bootstrap_ci", "interval")
CI_SPLIT_KEYS = (("ci_low", "ci_high"), ("lower", "upper"), ("accuracy_low", "accuracy_high"))
COUNT_KEYS = ("n", "count", "num", "episodes", "size")


@dataclass
class MetricsLog:
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    bad_lines: list[str] = field(default_factory=list)

    def groups(self) -> list[tuple[str, dict[str, list[tuple[float, float]]]]]:
        """(chart title, {metric: points}) for the named groups, then one chart per remaining metric."""
        remaining = {name: points for name, points in self.series.items() if not HIDDEN_METRICS.search(name)}
        charts = []
        for title, pattern in CHART_GROUPS:
            matched = {name: remaining[name] for name in sorted(remaining) if re.search(pattern, name)}
            for name in matched:
                del remaining[name]
            if matched:
                charts.append((title, matched))
        charts.extend((name, {name: remaining[name]}) for name in sorted(remaining))
        return charts


def read_metrics(path: Path) -> MetricsLog:
    log = MetricsLog()
    if not path.is_file():
        return log
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n") or not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as error:
                log.bad_lines.append(f"line {number}: {error}")
                continue
            if isinstance(line, dict) and isinstance(line.get("data"), dict):  # verl's file logger
                line = {**line["data"], "step": line.get("step")}
            step = line.get("step") if isinstance(line, dict) else None
            if not isinstance(step, int | float) or isinstance(step, bool):
                log.bad_lines.append(f"line {number}: no numeric `step`")
                continue
            for name, value in line.items():
                if name != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                    series[name].append((float(step), float(value)))
    log.series = dict(series)
    return log


@dataclass
class SummaryRow:
    label: str
    accuracy: float
    """A fraction in [0, 1]."""
    low: float | None
    high: float | None
    count: int | None
    rates: dict[str, float]


@dataclass
class EvalSummary:
    label: str
    step: int | None
    rows: list[SummaryRow]
    error: str | None = None


def _pair(value) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return float(value[0]), float(value[1])
    if isinstance(value, dict):
        low, high = value.get("low", value.get("lower")), value.get("high", value.get("upper"))
        if isinstance(low, int | float) and isinstance(high, int | float):
            return float(low), float(high)
    return None


def _interval(stats: dict) -> tuple[float, float] | None:
    for key in CI_PAIR_KEYS:
        pair = _pair(stats.get(key))
        if pair:
            return pair
    for low_key, high_key in CI_SPLIT_KEYS:
        pair = _pair([stats.get(low_key), stats.get(high_key)])
        if pair:
            return pair
    return None


def _rows(node, path: list[str], out: list[tuple[list[str], dict]]) -> None:
    if isinstance(node, dict):
        accuracy = node.get("accuracy", node.get("acc"))
        if isinstance(accuracy, dict) and isinstance(accuracy.get("mean"), int | float):
            # The evaluation harness's shape: {"accuracy": {"mean": m, "ci95": [low, high]}, "metrics": {...},
            # "reward": {...}, ...}: its evidence metrics, and its reward components labelled as such, are shown too.
            metrics, reward = node.get("metrics") or {}, node.get("reward") or {}
            shown = {
                **{name: metrics[name] for name in EVIDENCE_METRICS if metrics.get(name) is not None},
                **{f"reward {name}": value for name, value in reward.items() if value is not None},
            }
            out.append((path, {**node, **shown, "accuracy": accuracy["mean"], "ci95": accuracy.get("ci95")}))
        elif isinstance(accuracy, int | float) and not isinstance(accuracy, bool):
            out.append((path, node))
        for key, value in node.items():
            if isinstance(value, dict | list):
                _rows(value, [*path, str(key)], out)
    elif isinstance(node, list):
        for position, item in enumerate(node):
            name = item.get("category") or item.get("name") or item.get("benchmark") if isinstance(item, dict) else None
            _rows(item, [*path, str(name if isinstance(name, str) else position)], out)


def summary_rows(data) -> list[SummaryRow]:
    found: list[tuple[list[str], dict]] = []
    _rows(data, [], found)
    percent = any(float(stats.get("accuracy", stats.get("acc"))) > 1.0 for _, stats in found)
    scale = 0.01 if percent else 1.0
    rows = []
    for path, stats in found:
        label = " / ".join(part for part in path if part.lower() not in FILLER_KEYS) or "overall"
        interval = _interval(stats)
        count = next((stats[key] for key in COUNT_KEYS if isinstance(stats.get(key), int)), None)
        rates = {
            key: float(value)
            for key, value in stats.items()
            if key not in ("accuracy", "acc", *COUNT_KEYS)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and not key.startswith(("ci_", "lower", "upper", "accuracy_"))
        }
        rows.append(
            SummaryRow(
                label=label,
                accuracy=float(stats.get("accuracy", stats.get("acc"))) * scale,
                low=interval[0] * scale if interval else None,
                high=interval[1] * scale if interval else None,
                count=count,
                rates=rates,
            )
        )
    return rows


def _step_of(label: str, data) -> int | None:
    if isinstance(data, dict):
        for key in ("step", "global_step"):
            if isinstance(data.get(key), int):
                return data[key]
    numbers = re.findall(r"\d+", label)
    return int(numbers[-1]) if numbers else None


def read_summaries(run_dir: Path) -> list[EvalSummary]:
    summaries = []
    for path in find_files(run_dir, ("summary.json",)):
        label = str(path.parent.relative_to(run_dir)) if path.parent != run_dir else "."
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            summaries.append(EvalSummary(label, None, [], error=f"{path.name}: {error}"))
            continue
        summaries.append(EvalSummary(label, _step_of(label, data), summary_rows(data)))
    return sorted(summaries, key=lambda s: (s.step is None, s.step or 0, s.label))


def accuracy_over_checkpoints(summaries: list[EvalSummary]) -> dict[str, list[tuple[float, float]]]:
    """{row label: [(step, accuracy), ...]} across checkpoints that have a step."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for summary in summaries:
        if summary.step is None:
            continue
        for row in summary.rows:
            series[row.label].append((float(summary.step), row.accuracy))
    return dict(series)
