"""Tables and plots of a summary (`summary.json`), and side-by-side comparison of several runs.

Files written into a run folder: `summary.md` and `summary.csv` (one row per benchmark and per category value; the
reward's total and components as `reward_*` columns),
`accuracy_by_category.png`, `turns.png` (histogram of turns per episode) and `finish_reasons.png`.
`compare.md` / `compare.csv` hold one row per run (and per row of a paper-figures file) and one column per
benchmark's accuracy.

A paper-figures file is JSON: `[{"name": "UniDoc-RL 7B (paper)", "slidevqa": 0.75, "vidoseek": 0.8, ...}]`,
accuracies in [0, 1] keyed by benchmark name (`overall` for the overall column).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from unidoc_rl.common.atomic import atomic_write, atomic_write_bytes
from unidoc_rl.eval.aggregate import REWARD_FIELDS

ROW_METRICS = (
    "recall@1",
    "recall@3",
    "recall@5",
    "ndcg",
    "gold_shown",
    "gold_selection",
    "crop_rate",
    "gold_crop_f1",
    "invalid_rate",
    "answered",
    "turns",
)
"""Evidence and behaviour metrics (`metrics`), one column each."""
NATIVE_COLUMNS = ("mmlb_score", "mmlb_f1", "slidevqa_em", "slidevqa_f1")


def _rows(summary: dict) -> list[dict]:
    rows = []

    def row(benchmark: str, field: str, value: str, group: dict) -> dict:
        accuracy = group["accuracy"]
        out = {
            "benchmark": benchmark,
            "category": field,
            "value": value,
            "episodes": group["episodes"],
            "questions": group["questions"],
            "accuracy": accuracy["mean"],
            "ci_low": accuracy["ci95"][0],
            "ci_high": accuracy["ci95"][1],
        }
        native = group.get("native", {})
        for name in NATIVE_COLUMNS:
            entry = native.get(name)
            out[name] = entry["mean"] if isinstance(entry, dict) else entry
        for name in ROW_METRICS:
            out[name] = group["metrics"].get(name)
        for name in REWARD_FIELDS:  # reward components, not task metrics
            out[f"reward_{name}"] = group.get("reward", {}).get(name)
        out["answered_rate"] = group["finish_reasons"].get("answered", 0.0)
        out["model_tokens"] = group["tokens"]["model"]
        out["latency_s"] = group["latency_s"]["mean"]
        out["judge_fallbacks"] = group["judge_fallbacks"]
        return out

    if summary.get("overall"):
        rows.append(row("overall", "", "", summary["overall"]))
    for benchmark, data in summary["benchmarks"].items():
        rows.append(row(benchmark, "", "", data["all"]))
        for field, values in data["categories"].items():
            for value, group in values.items():
                rows.append(row(benchmark, field, value, group))
    return rows


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _markdown(headers: Sequence[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv(headers: Sequence[str], rows: list[list]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(headers)
    writer.writerows([["" if cell is None else cell for cell in row] for row in rows])
    return buffer.getvalue().encode("utf-8")


def write_tables(summary: dict, out_dir: Path) -> None:
    rows = _rows(summary)
    headers = list(rows[0]) if rows else ["benchmark"]
    table = [[row[name] for name in headers] for row in rows]
    display = [
        [
            f"{row['accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if name == "accuracy" else row[name]
            for name in headers
            if name not in ("ci_low", "ci_high")
        ]
        for row in rows
    ]
    shown = [
        name if name != "accuracy" else "accuracy [95% CI]" for name in headers if name not in ("ci_low", "ci_high")
    ]
    atomic_write_bytes(Path(out_dir) / "summary.md", ("# Evaluation summary\n\n" + _markdown(shown, display)).encode())
    atomic_write_bytes(Path(out_dir) / "summary.csv", _csv(headers, table))


def _save_figure(figure, path: Path) -> None:
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110, bbox_inches="tight"))


def write_plots(summary: dict, results: list[dict], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    paths = []
    labels, means, errors = [], [], [[], []]
    for benchmark, data in summary["benchmarks"].items():
        groups = [("all", data["all"])] + [
            (f"{field}={value}", group)
            for field, values in data["categories"].items()
            for value, group in values.items()
        ]
        for label, group in groups:
            accuracy = group["accuracy"]
            labels.append(f"{benchmark}: {label}")
            means.append(accuracy["mean"])
            errors[0].append(max(0.0, accuracy["mean"] - accuracy["ci95"][0]))
            errors[1].append(max(0.0, accuracy["ci95"][1] - accuracy["mean"]))
    figure, axis = plt.subplots(figsize=(8, 0.3 * len(labels) + 1.2))
    axis.barh(range(len(labels)), means, xerr=errors, color="#4c72b0", capsize=2)
    axis.set_yticks(range(len(labels)), labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("accuracy (LLM judge), 95% bootstrap interval")
    paths.append(out_dir / "accuracy_by_category.png")
    _save_figure(figure, paths[-1])
    plt.close(figure)

    turns = [int(result["metrics"]["turns"]) for result in results]
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.hist(turns, bins=range(0, max(turns, default=0) + 2), color="#55a868", align="left", rwidth=0.8)
    axis.set_xlabel("assistant turns per episode")
    axis.set_ylabel("episodes")
    paths.append(out_dir / "turns.png")
    _save_figure(figure, paths[-1])
    plt.close(figure)

    reasons = Counter(result["metrics"]["finish_reason"] for result in results)
    figure, axis = plt.subplots(figsize=(5, 3))
    names = sorted(reasons)
    axis.bar(names, [reasons[name] for name in names], color="#c44e52")
    axis.set_ylabel("episodes")
    axis.set_xlabel("finish reason")
    axis.tick_params(axis="x", labelrotation=20)
    paths.append(out_dir / "finish_reasons.png")
    _save_figure(figure, paths[-1])
    plt.close(figure)
    return paths


def comparison(run_dirs: Sequence[Path], paper_file: Path | None = None) -> tuple[list[str], list[list]]:
    """(headers, rows): one row per run and paper entry, accuracy per benchmark and overall."""
    summaries = {Path(run).name: json.loads((Path(run) / "summary.json").read_text()) for run in run_dirs}
    benchmarks = sorted({name for summary in summaries.values() for name in summary["benchmarks"]})
    headers = ["run", "overall", *benchmarks]
    rows: list[list] = []
    for name, summary in summaries.items():
        overall = summary["overall"]["accuracy"]["mean"] if summary.get("overall") else None
        rows.append(
            [
                name,
                overall,
                *[
                    summary["benchmarks"][bench]["all"]["accuracy"]["mean"] if bench in summary["benchmarks"] else None
                    for bench in benchmarks
                ],
            ]
        )
    if paper_file is not None:
        entries = json.loads(Path(paper_file).read_text())
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
            raise ValueError(f"{paper_file}: expected a JSON list of objects with a 'name' and accuracies")
        for entry in entries:
            rows.append([entry["name"], entry.get("overall"), *[entry.get(bench) for bench in benchmarks]])
    return headers, rows


def write_comparison(run_dirs: Sequence[Path], out_dir: Path, paper_file: Path | None = None) -> None:
    headers, rows = comparison(run_dirs, paper_file)
    out_dir = Path(out_dir)
    atomic_write_bytes(out_dir / "compare.md", ("# Accuracy by run\n\n" + _markdown(headers, rows)).encode())
    atomic_write_bytes(out_dir / "compare.csv", _csv(headers, rows))
