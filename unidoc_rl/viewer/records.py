"""One logged episode line, read tolerantly: a training trajectory or an evaluation result.

Line shapes read (both are JSON objects, one per line):
- training (`trajectories.jsonl`, written by the local trainer): `step`, `group`, `reward`, `components`
  (the reward breakdown: format, retrieval, selection, crop, answer, judge flags), `episode` (the EpisodeRecord
  dict), and optionally `ground_truth` (the reward's GroundTruth dict).
- evaluation (`results.jsonl`): `uid`, `benchmark`, category fields, `episode`, the reward components (under
  `reward`, as the evaluation harness writes them, or `components`, `rewards` or `reward_components`), the evidence
  metrics (in `metrics`, as the harness writes them: `unidoc_rl/eval/evidence.py`), the judge verdict (`verdict`,
  `judge` or `judge_verdict`: a number, a boolean, a string or an object), the benchmark's own score
  (`benchmark_score` or `score`), and optionally `correct`, `reference_answer`, `ground_truth`,
  `checkpoint`/`global_step`.
A bare EpisodeRecord dict (a line with `turns` or `searches` at the top level) is read as an episode too.
Fields the viewer does not know are kept and shown verbatim on the episode page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from unidoc_rl.episode import EpisodeRecord
from unidoc_rl.eval.evidence import EVIDENCE_METRICS
from unidoc_rl.rewards.ground_truth import GroundTruth, GroundTruthError

COMPONENT_KEYS = ("components", "rewards", "reward_components", "reward")
"""Where a line holds its reward breakdown (`reward` only when it is an object; a number is the training total)."""
VERDICT_KEYS = ("verdict", "judge", "judge_verdict")
CATEGORY_KEYS = ("category", "query_type", "source_type", "doc_type", "evidence_type", "answer_type")
CORE_COMPONENTS = ("format", "retrieval", "selection", "crop", "answer")
"""The dense reward's components, shown first and in this order."""
TOTAL_KEYS = ("score", "total")
"""Keys of the reward breakdown that hold the total rather than a component."""
JUDGE_FLAG_PREFIX = "judge_"
BOOKKEEPING_KEYS = ("search_failures", "forced_answer")
"""Counts and flags the reward breakdown carries beside its components."""


def is_component(name: str) -> bool:
    """A reward component (in [0, 1]), as opposed to the total, judge flags or bookkeeping."""
    return name not in TOTAL_KEYS and name not in BOOKKEEPING_KEYS and not name.startswith(JUDGE_FLAG_PREFIX)


class RecordError(ValueError):
    """A line that cannot be read as an episode; the message says which field is wrong."""


@dataclass(slots=True)
class EpisodeSummary:
    """What the episode list filters and sorts on: a few numbers per line, kept in memory for every episode."""

    source: int
    line: int
    offset: int
    step: int | None
    uid: str
    question: str
    question_folded: str
    reward: float | None
    components: dict[str, float]
    evidence: dict[str, float]
    """The evidence metrics the line records (defined ones only)."""
    finish_reason: str
    categories: tuple[str, ...]
    answered: bool
    correct: bool | None
    num_turns: int
    invalid_actions: int
    crops: int
    forced: bool


@dataclass
class EpisodeEntry:
    """A whole line, parsed for the episode page."""

    record: EpisodeRecord
    reward: float | None
    components: dict[str, float]
    evidence: dict[str, float]
    """The evidence metrics the line records (defined ones only)."""
    verdict: Any
    benchmark_score: float | None
    correct: bool | None
    categories: tuple[str, ...]
    step: int | None
    ground_truth: GroundTruth | None
    reference_answer: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    """Top-level fields the viewer does not interpret."""


def episode_dict(line: dict) -> dict:
    episode = line.get("episode")
    if isinstance(episode, dict):
        return episode
    if "turns" in line or "searches" in line:
        return line
    raise RecordError("no `episode` object in the line")


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def components_of(line: dict) -> dict[str, float]:
    for key in COMPONENT_KEYS:
        value = line.get(key)
        if isinstance(value, dict):
            return {name: number for name, raw in value.items() if (number := _number(raw)) is not None}
    return {}


def evidence_of(line: dict) -> dict[str, float]:
    metrics = line.get("metrics")
    if not isinstance(metrics, dict):
        return {}
    return {name: number for name in EVIDENCE_METRICS if (number := _number(metrics.get(name))) is not None}


def reward_of(line: dict, components: dict[str, float]) -> float | None:
    reward = _number(line.get("reward"))
    if reward is not None:
        return reward
    for key in TOTAL_KEYS:
        if key in components:
            return components[key]
    return None


def verdict_of(line: dict):
    for key in VERDICT_KEYS:
        if key in line:
            return line[key]
    return None


def verdict_score(verdict) -> float | None:
    """A verdict as a number in [0, 1] where it has one (number, boolean, {"score": …}, "correct"/"incorrect")."""
    number = _number(verdict)
    if number is not None:
        return number
    if isinstance(verdict, dict):
        for key in ("score", "verdict", "correct"):
            number = _number(verdict.get(key))
            if number is not None:
                return number
    if isinstance(verdict, str):
        folded = verdict.strip().lower()
        if folded in {"correct", "true", "yes", "1"}:
            return 1.0
        if folded in {"incorrect", "wrong", "false", "no", "0"}:
            return 0.0
    return None


def benchmark_score_of(line: dict) -> float | None:
    for key in ("benchmark_score", "score"):
        number = _number(line.get(key))
        if number is not None:
            return number
    return None


def correct_of(line: dict, components: dict[str, float], answered: bool) -> bool | None:
    """Correctness: an explicit `correct`, else the judge verdict, else the answer reward; None if unknown."""
    explicit = line.get("correct")
    if isinstance(explicit, bool):
        return explicit
    score = verdict_score(verdict_of(line))
    if score is None and "answer" in components:
        score = components["answer"]
    if score is None:
        score = benchmark_score_of(line)
    if score is None:
        return None
    return answered and score >= 0.5


def categories_of(line: dict, sample_categories: tuple[str, ...] = ()) -> tuple[str, ...]:
    labels: list[str] = []
    if isinstance(line.get("benchmark"), str):
        labels.append(f"benchmark: {line['benchmark']}")
    for key in CATEGORY_KEYS:
        if isinstance(line.get(key), str):
            labels.append(f"{key}: {line[key]}")
    nested = line.get("categories")
    if isinstance(nested, dict):
        labels.extend(f"{key}: {value}" for key, value in nested.items() if isinstance(value, str))
    for label in sample_categories:
        if label not in labels:
            labels.append(label)
    return tuple(labels)


def step_of(line: dict) -> int | None:
    for key in ("step", "global_step", "checkpoint_step"):
        value = line.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def ground_truth_of_line(line: dict) -> GroundTruth | None:
    truth = line.get("ground_truth")
    if truth is None and "gold_pages" in line and isinstance(line.get("reference_answer"), str):
        truth = {"reference_answer": line["reference_answer"], "gold_pages": line["gold_pages"]}
    if truth is None:
        return None
    try:
        return GroundTruth.from_dict(truth)
    except GroundTruthError as error:
        raise RecordError(f"ground_truth: {error}") from error


def summarize(line: dict, source: int, number: int, offset: int, samples: SampleInfo) -> EpisodeSummary:
    """The list row of one line, read without building the whole record; raises RecordError if malformed."""
    episode = episode_dict(line)
    try:
        uid = str(episode.get("uid") or line.get("uid") or "")
        question = episode.get("question") or ""
        if not question and uid in samples.truths:
            question = samples.truths[uid].query
        answered = episode.get("answer") is not None
        components = components_of(line)
        searches = episode.get("searches") or []
        actions = episode.get("actions") or []
        num_turns = int(episode.get("num_turns") or len(episode.get("turns") or []))
        crops = sum(len(step.get("crops") or []) for step in searches)
    except (AttributeError, TypeError, ValueError) as error:
        raise RecordError(f"malformed episode: {error}") from error
    question = samples.intern(str(question))
    return EpisodeSummary(
        source=source,
        line=number,
        offset=offset,
        step=step_of(line),
        uid=uid,
        question=question,
        question_folded=samples.intern(question.casefold()),
        reward=reward_of(line, components),
        components=components,
        evidence=evidence_of(line),
        finish_reason=str(episode.get("finish_reason") or "unfinished"),
        categories=categories_of(line, samples.categories.get(uid, ())),
        answered=answered,
        correct=correct_of(line, components, answered),
        num_turns=num_turns,
        invalid_actions=sum(1 for kind in actions if kind == "invalid"),
        crops=crops,
        forced=bool(episode.get("forced_answer")),
    )


KNOWN_FIELDS = frozenset(
    {"step", "global_step", "checkpoint_step", "episode", "reward", "ground_truth", "reference_answer", "uid"}
    | set(COMPONENT_KEYS)
    | set(VERDICT_KEYS)
    | {"benchmark", "categories", "correct", "benchmark_score", "score"}
    | set(CATEGORY_KEYS)
)


def parse_entry(line: dict, samples: SampleInfo) -> EpisodeEntry:
    """The whole line for the episode page; raises RecordError if the record does not parse."""
    episode = episode_dict(line)
    try:
        record = EpisodeRecord.from_dict(episode)
    except (KeyError, TypeError, ValueError) as error:
        raise RecordError(f"episode record does not parse: {error!r}") from error
    if not record.uid and isinstance(line.get("uid"), str):
        record.uid = line["uid"]
    truth = ground_truth_of_line(line) or samples.truths.get(record.uid)
    if not record.question and truth is not None:
        record.question = truth.query
    components = components_of(line)
    reference = line.get("reference_answer") if isinstance(line.get("reference_answer"), str) else None
    return EpisodeEntry(
        record=record,
        reward=reward_of(line, components),
        components=components,
        evidence=evidence_of(line),
        verdict=verdict_of(line),
        benchmark_score=benchmark_score_of(line),
        correct=correct_of(line, components, record.answer is not None),
        categories=categories_of(line, samples.categories.get(record.uid, ())),
        step=step_of(line),
        ground_truth=truth,
        reference_answer=reference or (truth.reference_answer if truth else None),
        extra={key: value for key, value in line.items() if key not in KNOWN_FIELDS},
    )


@dataclass
class SampleInfo:
    """Ground truth and categories by uid, from a samples file, for logs whose lines do not carry them."""

    truths: dict[str, GroundTruth] = field(default_factory=dict)
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _interned: dict[str, str] = field(default_factory=dict)

    def intern(self, text: str) -> str:
        """GRPO groups repeat each question; keep one copy of each string."""
        return self._interned.setdefault(text, text)


def load_samples_info(path) -> SampleInfo:
    """Read unified samples (JSON list or JSON Lines) as the data preparation step reads them."""
    from unidoc_rl.data.prepare import ground_truth_of, load_samples

    info = SampleInfo()
    for position, sample in enumerate(load_samples(path)):
        try:
            uid = str(sample["uid"])
            info.truths[uid] = ground_truth_of(sample)
        except (KeyError, TypeError, GroundTruthError) as error:
            raise RecordError(f"{path}: sample #{position} is malformed: {error!r}") from error
        meta = sample.get("meta_info") or {}
        info.categories[uid] = tuple(f"{key}: {meta[key]}" for key in CATEGORY_KEYS if isinstance(meta.get(key), str))
    return info
