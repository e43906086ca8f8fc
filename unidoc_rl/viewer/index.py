"""Episode logs indexed by byte offset: one small summary row per line in memory, the line itself read on demand.

A log is scanned once; afterwards only what was appended is read (a training run that is still writing shows its
new steps on the next request). A log that shrank or was replaced (a resumed run truncates its log) is re-indexed
from the start. A trailing line without its newline is still being written and is left for the next refresh.
Lines that are not JSON or not an episode are counted and reported, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from unidoc_rl.eval.evidence import EVIDENCE_METRICS
from unidoc_rl.viewer.query import order_components
from unidoc_rl.viewer.records import EpisodeEntry, EpisodeSummary, RecordError, SampleInfo, parse_entry, summarize

logger = logging.getLogger("unidoc_rl.viewer")

EPISODE_LOG_NAMES = ("trajectories.jsonl", "results.jsonl")
MAX_DEPTH = 3
"""How deep below the run folder episode logs and summaries are looked for (one folder per checkpoint)."""
PROGRESS_BYTES = 64 << 20
"""Show a progress bar when more than this much of a log is scanned at once."""


@dataclass
class BadLine:
    source: int
    line: int
    reason: str


@dataclass
class EpisodeLog:
    """One JSONL file of episodes, indexed."""

    number: int
    path: Path
    label: str
    rows: list[EpisodeSummary] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    """Byte offset of every complete line, readable or not (line number n starts at offsets[n])."""
    bad: list[BadLine] = field(default_factory=list)
    end: int = 0
    """Bytes indexed so far (always at a line boundary)."""
    identity: tuple[int, int] | None = None

    def reset(self) -> None:
        self.rows, self.offsets, self.bad, self.end = [], [], [], 0


def find_files(run_dir: Path, names: tuple[str, ...]) -> list[Path]:
    """Files with one of `names` in `run_dir` and up to MAX_DEPTH folders below it, in a stable order."""
    found = []
    for root, dirs, files in os.walk(run_dir):
        depth = len(Path(root).relative_to(run_dir).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
        found.extend(Path(root) / name for name in names if name in files)
    return sorted(found, key=lambda path: (len(path.relative_to(run_dir).parts), str(path)))


@dataclass(frozen=True)
class Facets:
    """The values the list's filter menus offer, over every indexed episode."""

    finish_reasons: tuple[str, ...]
    categories: tuple[str, ...]
    components: tuple[str, ...]
    """Reward components in display order."""
    evidence: tuple[str, ...]
    """Evidence metrics some episode records, in display order."""


FINISH_ORDER = ("answered", "max_turns", "max_images", "max_model_len", "no_action", "unfinished")


def _finish_order(reason: str) -> tuple[int, str]:
    return (FINISH_ORDER.index(reason) if reason in FINISH_ORDER else len(FINISH_ORDER), reason)


class EpisodeIndex:
    def __init__(self, run_dir: Path, samples: SampleInfo | None = None):
        self.run_dir = run_dir
        self.samples = samples or SampleInfo()
        self.logs = [
            EpisodeLog(number, path, str(path.relative_to(run_dir)))
            for number, path in enumerate(find_files(run_dir, EPISODE_LOG_NAMES))
        ]
        self._lock = threading.Lock()
        self._cache: tuple | None = None
        self._rows: list[EpisodeSummary] = []
        self._facets = Facets((), (), (), ())
        self.refresh()

    def _current(self) -> None:
        state = tuple((log.identity, log.end, len(log.rows)) for log in self.logs)
        if state == self._cache:
            return
        rows = [row for log in self.logs for row in log.rows]
        finishes = {row.finish_reason for row in rows}
        self._rows = rows
        self._facets = Facets(
            finish_reasons=tuple(sorted(finishes, key=_finish_order)),
            categories=tuple(sorted({label for row in rows for label in row.categories})),
            components=tuple(order_components(name for row in rows for name in row.components)),
            evidence=tuple(name for name in EVIDENCE_METRICS if any(name in row.evidence for row in rows)),
        )
        self._cache = state

    @property
    def rows(self) -> list[EpisodeSummary]:
        """Every readable episode, in log order (cached until a log changes)."""
        with self._lock:
            self._current()
            return self._rows

    @property
    def facets(self) -> Facets:
        with self._lock:
            self._current()
            return self._facets

    @property
    def bad_lines(self) -> list[BadLine]:
        return [bad for log in self.logs for bad in log.bad]

    def refresh(self) -> None:
        """Index what was appended since the last call; start over for a log that shrank or was replaced."""
        with self._lock:
            for log in self.logs:
                self._refresh_log(log)

    def _refresh_log(self, log: EpisodeLog) -> None:
        try:
            stat = log.path.stat()
        except FileNotFoundError:
            log.reset()
            return
        identity = (stat.st_dev, stat.st_ino)
        if identity != log.identity or stat.st_size < log.end:
            log.reset()
            log.identity = identity
        if stat.st_size == log.end:
            return
        with open(log.path, "rb") as handle:
            handle.seek(log.end)
            offset = log.end
            todo = stat.st_size - log.end
            bar = tqdm(
                total=todo, unit="B", unit_scale=True, desc=f"indexing {log.label}", disable=todo < PROGRESS_BYTES
            )
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break
                number = len(log.offsets)
                log.offsets.append(offset)
                if raw.strip():
                    self._index_line(log, raw, number, offset)
                offset += len(raw)
                bar.update(len(raw))
            bar.close()
            log.end = offset

    def _index_line(self, log: EpisodeLog, raw: bytes, number: int, offset: int) -> None:
        try:
            line = json.loads(raw)
            if not isinstance(line, dict):
                raise RecordError(f"a line must be a JSON object, got {type(line).__name__}")
            log.rows.append(summarize(line, log.number, number, offset, self.samples))
        except (json.JSONDecodeError, UnicodeDecodeError, RecordError) as error:
            log.bad.append(BadLine(log.number, number + 1, str(error)))
            logger.warning("%s line %d skipped: %s", log.label, number + 1, error)

    def read_line(self, source: int, number: int) -> dict:
        """The JSON object on line `number` (0-based) of log `source`; KeyError if there is no such line."""
        if not 0 <= source < len(self.logs):
            raise KeyError(f"no episode log #{source}")
        log = self.logs[source]
        if not 0 <= number < len(log.offsets):
            raise KeyError(f"{log.label} has no line {number + 1}")
        with open(log.path, "rb") as handle:
            handle.seek(log.offsets[number])
            raw = handle.readline()
        try:
            return json.loads(raw)
        except json.JSONDecodeError as error:
            raise RecordError(f"{log.label} line {number + 1} is not JSON: {error}") from error

    def entry(self, source: int, number: int) -> EpisodeEntry:
        line = self.read_line(source, number)
        if not isinstance(line, dict):
            raise RecordError(f"line {number + 1} is not a JSON object")
        return parse_entry(line, self.samples)

    def neighbours(self, source: int, number: int) -> tuple[EpisodeSummary | None, EpisodeSummary | None]:
        """The readable episodes before and after this one in the same log."""
        rows = self.logs[source].rows
        position = bisect_left(rows, number, key=lambda row: row.line)
        before = rows[position - 1] if position > 0 else None
        after_position = position + 1 if position < len(rows) and rows[position].line == number else position
        after = rows[after_position] if after_position < len(rows) else None
        return before, after
