"""Summaries of evaluation results: per benchmark, per category value, with bootstrap 95% intervals.

Accuracy is averaged per question first (with `--n` samples a question's accuracy is the mean of its samples) and
the interval comes from resampling questions (percentile bootstrap, fixed seed), so repeated samples of one
question never count as independent evidence. The evidence metrics (`unidoc_rl/eval/evidence.py`) are averaged the
same way, over the questions where they are defined, with their intervals in `metrics_ci95`. pass@k is the
unbiased estimator 1 - C(n-c, k)/C(n, k).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from unidoc_rl.eval.evidence import EVIDENCE_METRICS
from unidoc_rl.eval.mmlongbench import f1_not_answerable

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
BEHAVIOUR_FIELDS = ("crop_any", "invalid_rate", "any_invalid", "answered", "searches", "search_failures", "turns")
"""Per-episode behaviour, averaged over episodes."""
REWARD_FIELDS = ("score", "format", "retrieval", "selection", "crop", "answer")
"""The training reward's total and components (reward components, not evidence metrics: under `unidoc` selection
and crop credit actions they cannot judge), averaged as training's validation reports them."""
NATIVE_ACCURACIES = ("mmlb_score", "slidevqa_em", "slidevqa_f1")


def bootstrap_interval(
    values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1 or np.all(data == data[0]):
        return (float(data[0]), float(data[0]))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return (float(low), float(high))


def pass_at_k(n: int, correct: int, k: int) -> float:
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def _mean(values: Iterable[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _per_question(questions: list[list[dict]], name: str) -> list[float]:
    """One evidence metric per question: the mean of its episodes where defined; questions with none left out."""
    means = (_mean(r["metrics"].get(name) for r in group) for group in questions)
    return [mean for mean in means if mean is not None]


def _with_interval(per_question: list[float]) -> dict:
    low, high = bootstrap_interval(per_question)
    return {"mean": sum(per_question) / len(per_question), "ci95": [low, high]}


def summarize_group(results: list[dict]) -> dict:
    """Metrics of one group of result lines (one benchmark, or one category value)."""
    by_question: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for result in results:
        by_question[(result["benchmark"], result["uid"])].append(result)
    questions = list(by_question.values())
    accuracy = [sum(r["accuracy"] for r in group) / len(group) for group in questions]
    summary: dict = {
        "episodes": len(results),
        "questions": len(questions),
        "accuracy": _with_interval(accuracy),
        "judge_fallbacks": sum(1 for r in results if r["judge"]["fallback"]),
    }
    samples_per_question = min(len(group) for group in questions)
    if samples_per_question > 1:
        ks = sorted({1, samples_per_question} | {k for k in (2, 4, 8, 16) if k < samples_per_question})
        summary["pass@k"] = {
            str(k): _with_interval(
                [pass_at_k(len(group), sum(r["accuracy"] >= 0.5 for r in group), k) for group in questions]
            )
            for k in ks
        }
    native: dict = {}
    for name in NATIVE_ACCURACIES:
        values = [r["native"][name] for r in results if name in r["native"]]
        if values:
            per_question = [
                sum(r["native"][name] for r in group) / len(group) for group in questions if name in group[0]["native"]
            ]
            native[name] = _with_interval(per_question)
    if any("mmlb_pred" in r["native"] for r in results):
        scored = [r for r in results if "mmlb_pred" in r["native"]]
        native["mmlb_f1"] = f1_not_answerable(
            [r["ground_truth"]["reference_answer"] for r in scored],
            [r["native"]["mmlb_pred"] for r in scored],
            [r["native"]["mmlb_score"] for r in scored],
        )
    if native:
        summary["native"] = native
    evidence = {name: _per_question(questions, name) for name in EVIDENCE_METRICS}
    summary["metrics"] = {
        **{name: _mean(values) for name, values in evidence.items()},
        **{name: _mean(r["metrics"].get(name) for r in results) for name in BEHAVIOUR_FIELDS},
    }
    summary["metrics_ci95"] = {
        name: list(bootstrap_interval(values)) if values else None for name, values in evidence.items()
    }
    if all("reward" in r for r in results):
        summary["reward"] = {name: _mean(r["reward"][name] for r in results) for name in REWARD_FIELDS}
    reasons = Counter(r["metrics"]["finish_reason"] for r in results)
    summary["finish_reasons"] = {reason: count / len(results) for reason, count in sorted(reasons.items())}
    summary["tokens"] = {
        name: _mean(r["tokens"][name] for r in results) for name in ("prompt", "response", "model", "total")
    }
    latencies = sorted(r["latency_s"] for r in results)
    summary["latency_s"] = {
        "mean": sum(latencies) / len(latencies),
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
    }
    return summary


def summarize(results: list[dict]) -> dict:
    """{"overall": ..., "benchmarks": {name: {"all": ..., "categories": {field: {value: ...}}}}}."""
    if not results:
        return {"overall": None, "benchmarks": {}}
    benchmarks: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        benchmarks[result["benchmark"]].append(result)
    out: dict = {"overall": summarize_group(results), "benchmarks": {}}
    for name, members in sorted(benchmarks.items()):
        groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for result in members:
            for field, values in result.get("categories", {}).items():
                for value in values:
                    groups[field][value].append(result)
        out["benchmarks"][name] = {
            "all": summarize_group(members),
            "categories": {
                field: {value: summarize_group(group) for value, group in sorted(values.items())}
                for field, values in sorted(groups.items())
            },
        }
    return out
