"""One logged episode line, as the viewer shows it: `unidoc_rl.episode_log.EpisodeLogLine`, read strictly.

Every episode log (`trajectories.jsonl` of a training run, `results.jsonl` of an evaluation run) holds episode log
lines (schema and fields: `unidoc_rl/episode_log.py`, docs/viewer.md). A line that is not one (not JSON, another
schema, an unknown field, a field of the wrong type) is reported with the reason and left out of the list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unidoc_rl.env.episode import EpisodeRecord
from unidoc_rl.episode_log import EpisodeLogError, EpisodeLogLine, JudgeVerdict
from unidoc_rl.eval.evidence import EVIDENCE_METRICS
from unidoc_rl.rewards.ground_truth import GroundTruth, GroundTruthError

CATEGORY_KEYS = ("category", "query_type", "source_type", "doc_type", "evidence_type", "answer_type")
"""Sample `meta_info` fields read as categories from a samples file (`--samples`)."""
CORE_COMPONENTS = ("format", "retrieval", "selection", "crop", "answer")
"""The dense reward's components, shown first and in this order."""
TOTAL_KEYS = ("score",)
"""The reward breakdown's field that holds the total rather than a component."""
JUDGE_FLAG_PREFIX = "judge_"
BOOKKEEPING_KEYS = ("search_failures", "forced_answer")
"""Counts and flags the reward breakdown carries beside its components."""
JUDGE_SOURCES = ("judge", "cache", "fallback")
"""Verdict sources that mean the judge was asked (else `no_answer` or a rule-based scorer's name)."""


def is_component(name: str) -> bool:
    """A reward component (in [0, 1]), as opposed to the total, judge flags or bookkeeping."""
    return name not in TOTAL_KEYS and name not in BOOKKEEPING_KEYS and not name.startswith(JUDGE_FLAG_PREFIX)


class RecordError(ValueError):
    """A line that cannot be read as an episode log line, or a malformed samples file; the message says why."""


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

    line: EpisodeLogLine
    record: EpisodeRecord
    components: dict[str, float]
    evidence: dict[str, float]
    """The evidence metrics the line records (defined ones only)."""
    categories: tuple[str, ...]
    ground_truth: GroundTruth | None
    """The line's, else the samples file's."""

    @property
    def reward(self) -> float | None:
        return self.line.total

    @property
    def verdict(self) -> JudgeVerdict | None:
        return self.line.verdict

    @property
    def correct(self) -> bool | None:
        return self.line.correct

    @property
    def step(self) -> int | None:
        return self.line.step

    @property
    def reference_answer(self) -> str | None:
        return self.ground_truth.reference_answer if self.ground_truth is not None else None


def read_line(line: dict) -> EpisodeLogLine:
    try:
        return EpisodeLogLine.from_dict(line)
    except EpisodeLogError as error:
        raise RecordError(str(error)) from error


def components_of(line: EpisodeLogLine) -> dict[str, float]:
    """Every field of the reward breakdown as a number (empty for an unscored episode)."""
    return {} if line.reward is None else line.reward.metrics()


def evidence_of(line: EpisodeLogLine) -> dict[str, float]:
    metrics = line.metrics or {}
    return {
        name: float(value)
        for name in EVIDENCE_METRICS
        if isinstance(value := metrics.get(name), int | float) and not isinstance(value, bool)
    }


def categories_of(line: EpisodeLogLine, samples: SampleInfo) -> tuple[str, ...]:
    labels = list(line.category_labels)
    labels += [label for label in samples.categories.get(line.uid, ()) if label not in labels]
    return tuple(labels)


def summarize(raw: dict, source: int, number: int, offset: int, samples: SampleInfo) -> EpisodeSummary:
    """The list row of one line; raises RecordError if it is not an episode log line."""
    line = read_line(raw)
    record = line.episode
    uid = line.uid or record.uid
    question = record.question
    if not question:
        truth = line.ground_truth or samples.truths.get(uid)
        question = truth.query if truth is not None else ""
    question = samples.intern(question)
    components = components_of(line)
    return EpisodeSummary(
        source=source,
        line=number,
        offset=offset,
        step=line.step,
        uid=uid,
        question=question,
        question_folded=samples.intern(question.casefold()),
        reward=line.total,
        components=components,
        evidence=evidence_of(line),
        finish_reason=record.finish_reason.value if record.finish_reason else "unfinished",
        categories=categories_of(line, samples),
        answered=record.answered,
        correct=line.correct,
        num_turns=record.num_turns or len(record.turns),
        invalid_actions=record.invalid_actions,
        crops=len(record.crops),
        forced=record.forced_answer,
    )


def parse_entry(raw: dict, samples: SampleInfo) -> EpisodeEntry:
    """The whole line for the episode page; raises RecordError if it is not an episode log line."""
    line = read_line(raw)
    record = line.episode
    if not record.uid:
        record.uid = line.uid
    truth = line.ground_truth or samples.truths.get(record.uid)
    if not record.question and truth is not None:
        record.question = truth.query
    return EpisodeEntry(
        line=line,
        record=record,
        components=components_of(line),
        evidence=evidence_of(line),
        categories=categories_of(line, samples),
        ground_truth=truth,
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
