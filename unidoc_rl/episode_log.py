"""One episode log line: the typed record that every producer of episode logs writes and the viewer reads.

One JSON object per line, the same shape for a training trajectory (`trajectories.jsonl`: the verl plugin's trainer
with `unidoc_trainer.trajectory_log`, the viewer's sample run) and an evaluation episode (`results.jsonl`: the
evaluation runner, the viewer's sample run). Fields (`schema` 1):

- `schema`: 1. A line without it, or with another number, is refused (older writers named things differently).
- `uid`: the sample's uid. `episode`: the `EpisodeRecord` dict.
- `reward`: the reward's breakdown (`RewardBreakdown`: `score`, the total, then `format`, `retrieval`,
  `selection`, `crop`, `answer`, the judge flags `judge_called`/`judge_fallback`/`judge_cached`, `search_failures`,
  `forced_answer`), every field present; absent when the episode was not scored.
- `step`: the training step (a trajectory), or the evaluated checkpoint's step where known.
- `group`: the GRPO group (the prompt uid) of a training trajectory.
- `benchmark`, `categories` (`{name: [values]}`), `key` (`benchmark/uid/sample_index`) and `sample_index`: where
  an evaluation episode belongs.
- `ground_truth`: the reward's `GroundTruth` dict (query, reference answer, gold pages and boxes).
- `judge`: the verdict on the final answer (`{"score", "fallback", "source"}`; source `judge`, `cache`,
  `fallback`, `no_answer` or the rule-based scorer's name), and `accuracy`, its score: evaluation only.
- `native` (the benchmark's own scores), `metrics` (evidence and behaviour metrics, `unidoc_rl/eval/metrics.py`),
  `tokens`, `latency_s`, `answer_format`: evaluation only.
- `turn_advantages`: per-turn advantages of a training trajectory (a list of numbers), when the trainer has them.

Optional fields are left out of a line when they are None (an evaluation line always has `native`, `metrics`
and `tokens`, possibly empty). Reading is strict: an unknown field, a missing
`schema`/`uid`/`episode`, or a field of the wrong type raises `EpisodeLogError` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from numbers import Real
from typing import Any

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.rewards.ground_truth import GroundTruth, GroundTruthError
from unidoc_rl.rewards.scorer import RewardBreakdown

SCHEMA = 1


class EpisodeLogError(ValueError):
    """A line that is not an episode log line of this schema; the message names the field."""


@dataclass(frozen=True)
class JudgeVerdict:
    """The verdict on an episode's final answer (evaluation: the reward's own verdict where it asked the judge)."""

    score: float
    fallback: bool = False
    source: str = "judge"

    @classmethod
    def from_dict(cls, data) -> JudgeVerdict:
        if not isinstance(data, Mapping):
            raise EpisodeLogError(f"judge must be an object, got {data!r}")
        unknown = set(data) - {"score", "fallback", "source"}
        if unknown:
            raise EpisodeLogError(f"judge has unknown fields {sorted(unknown)}")
        return cls(
            score=_number(data.get("score"), "judge.score"),
            fallback=_flag(data.get("fallback", False), "judge.fallback"),
            source=_text(data.get("source", "judge"), "judge.source"),
        )


_BREAKDOWN_KINDS = {f.name: f.type for f in fields(RewardBreakdown)}
_BREAKDOWN_REQUIRED = frozenset(
    f.name for f in fields(RewardBreakdown) if f.default is MISSING and f.default_factory is MISSING
)


def breakdown_from_dict(data) -> RewardBreakdown:
    """A reward breakdown as logged (`asdict`) or as verl carries it (`RewardBreakdown.metrics()`: all floats)."""
    if not isinstance(data, dict | Mapping):
        raise EpisodeLogError(f"reward must be an object (the reward breakdown), got {data!r}")
    if not _BREAKDOWN_REQUIRED <= data.keys() <= _BREAKDOWN_KINDS.keys():
        unknown = set(data) - set(_BREAKDOWN_KINDS)
        if unknown:
            raise EpisodeLogError(f"reward has unknown fields {sorted(unknown)}")
        raise EpisodeLogError(f"reward lacks {sorted(_BREAKDOWN_REQUIRED - set(data))}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        kind = _BREAKDOWN_KINDS[name]
        if kind == "bool":
            values[name] = _flag(value, f"reward.{name}", numbers=True)
        elif kind == "int":
            number = _number(value, f"reward.{name}")
            if number != int(number):
                raise EpisodeLogError(f"reward.{name} must be a whole number, got {value!r}")
            values[name] = int(number)
        else:
            values[name] = _number(value, f"reward.{name}")
    return RewardBreakdown(**values)


@dataclass
class EpisodeLogLine:
    uid: str
    episode: EpisodeRecord
    reward: RewardBreakdown | None = None
    step: int | None = None
    group: str | None = None
    benchmark: str | None = None
    categories: dict[str, list[str]] = field(default_factory=dict)
    key: str | None = None
    sample_index: int | None = None
    ground_truth: GroundTruth | None = None
    judge: JudgeVerdict | None = None
    accuracy: float | None = None
    native: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    tokens: dict[str, int] | None = None
    latency_s: float | None = None
    answer_format: str | None = None
    turn_advantages: list[float] | None = None

    # --- derived -------------------------------------------------------------------------------------------

    @property
    def total(self) -> float | None:
        """The reward's total, None when the episode was not scored."""
        return self.reward.score if self.reward is not None else None

    @property
    def verdict(self) -> JudgeVerdict | None:
        """The verdict on the answer: the line's `judge`, else the reward's own where it asked the judge."""
        if self.judge is not None:
            return self.judge
        if self.reward is not None and self.reward.judge_called:
            source = "fallback" if self.reward.judge_fallback else ("cache" if self.reward.judge_cached else "judge")
            return JudgeVerdict(self.reward.answer, self.reward.judge_fallback, source)
        return None

    @property
    def correct(self) -> bool | None:
        """An answered episode whose verdict (else answer reward) is at least 0.5; None when neither is known."""
        verdict = self.verdict
        score = verdict.score if verdict is not None else (self.reward.answer if self.reward is not None else None)
        if score is None:
            return None
        return self.episode.answered and score >= 0.5

    @property
    def category_labels(self) -> tuple[str, ...]:
        """`benchmark: …` then `name: value` for every category value, in order."""
        labels = [f"benchmark: {self.benchmark}"] if self.benchmark is not None else []
        labels += [f"{name}: {value}" for name, values in self.categories.items() for value in values]
        return tuple(labels)

    # --- the line ------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        line: dict[str, Any] = {"schema": SCHEMA, "uid": self.uid}
        for name in _OPTIONAL_SCALARS:
            value = getattr(self, name)
            if value is not None:
                line[name] = value
        if self.categories:
            line["categories"] = {name: list(values) for name, values in self.categories.items()}
        if self.ground_truth is not None:
            line["ground_truth"] = self.ground_truth.to_dict()
        line["episode"] = self.episode.to_dict()
        if self.reward is not None:
            line["reward"] = asdict(self.reward)
        if self.judge is not None:
            line["judge"] = asdict(self.judge)
        for name in ("native", "metrics", "tokens"):
            if getattr(self, name) is not None:
                line[name] = dict(getattr(self, name))
        if self.turn_advantages is not None:
            line["turn_advantages"] = [float(value) for value in self.turn_advantages]
        return line

    @classmethod
    def from_dict(cls, line) -> EpisodeLogLine:
        if not isinstance(line, dict | Mapping):
            raise EpisodeLogError(f"a line must be a JSON object, got {type(line).__name__}")
        schema = line.get("schema")
        if schema != SCHEMA:
            hint = " (a line of an older writer?)" if schema is None else ""
            raise EpisodeLogError(f"schema must be {SCHEMA}, got {schema!r}{hint}")
        unknown = set(line) - _FIELDS
        if unknown:
            raise EpisodeLogError(f"unknown fields {sorted(unknown)}")
        if not isinstance(line.get("episode"), dict | Mapping):
            raise EpisodeLogError("no `episode` object in the line")
        try:
            episode = EpisodeRecord.from_dict(line["episode"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise EpisodeLogError(f"episode does not parse: {error!r}") from error
        truth = None
        if "ground_truth" in line:
            try:
                truth = GroundTruth.from_dict(line["ground_truth"])
            except GroundTruthError as error:
                raise EpisodeLogError(f"ground_truth: {error}") from error
        advantages = line.get("turn_advantages")
        if advantages is not None:
            if not isinstance(advantages, list):
                raise EpisodeLogError(f"turn_advantages must be a list of numbers, got {advantages!r}")
            advantages = [_number(value, "turn_advantages[]") for value in advantages]
        return cls(
            uid=_text(line.get("uid"), "uid"),
            episode=episode,
            reward=breakdown_from_dict(line["reward"]) if "reward" in line else None,
            step=_whole(line.get("step"), "step"),
            group=_optional_text(line.get("group"), "group"),
            benchmark=_optional_text(line.get("benchmark"), "benchmark"),
            categories=_categories(line.get("categories", {})),
            key=_optional_text(line.get("key"), "key"),
            sample_index=_whole(line.get("sample_index"), "sample_index"),
            ground_truth=truth,
            judge=JudgeVerdict.from_dict(line["judge"]) if "judge" in line else None,
            accuracy=_number(line["accuracy"], "accuracy") if "accuracy" in line else None,
            native=_object(line["native"], "native") if "native" in line else None,
            metrics=_object(line["metrics"], "metrics") if "metrics" in line else None,
            tokens=_counts(line["tokens"], "tokens") if "tokens" in line else None,
            latency_s=_number(line["latency_s"], "latency_s") if "latency_s" in line else None,
            answer_format=_optional_text(line.get("answer_format"), "answer_format"),
            turn_advantages=advantages,
        )


_OPTIONAL_SCALARS = ("key", "sample_index", "step", "group", "benchmark", "accuracy", "latency_s", "answer_format")
_FIELDS = frozenset({"schema", *(f.name for f in fields(EpisodeLogLine))})


def _number(value, where: str) -> float:
    if type(value) is float or type(value) is int:  # the common case, without the slower ABC check
        return float(value)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise EpisodeLogError(f"{where} must be a number, got {value!r}")
    return float(value)


def _flag(value, where: str, numbers: bool = False) -> bool:
    if isinstance(value, bool):
        return value
    if numbers and isinstance(value, Real) and value in (0, 1):
        return bool(value)
    raise EpisodeLogError(f"{where} must be a boolean, got {value!r}")


def _text(value, where: str) -> str:
    if not isinstance(value, str):
        raise EpisodeLogError(f"{where} must be a string, got {value!r}")
    return value


def _optional_text(value, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _whole(value, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EpisodeLogError(f"{where} must be an integer, got {value!r}")
    return value


def _object(value, where: str) -> dict:
    if not isinstance(value, dict | Mapping):
        raise EpisodeLogError(f"{where} must be an object, got {value!r}")
    return dict(value)


def _counts(value, where: str) -> dict[str, int]:
    return {name: int(_number(count, f"{where}.{name}")) for name, count in _object(value, where).items()}


def _categories(value) -> dict[str, list[str]]:
    categories = _object(value, "categories")
    for name, values in categories.items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise EpisodeLogError(f"categories.{name} must be a list of strings, got {values!r}")
    return {name: list(values) for name, values in categories.items()}
