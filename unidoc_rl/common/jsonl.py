"""Append-only JSON Lines logs (trajectories, metrics) that survive a crash mid-write.

Each call writes complete lines in one `write`, then flushes and fsyncs (`write_many`: one fsync for a step's
records). Opening a log truncates a trailing partial line left by a crash, and `truncate_after_step` drops records
of steps a resumed run will redo, so a resumed run's log has no duplicates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from unidoc_rl.common.atomic import atomic_write_bytes


class JsonlLog:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_last_line()
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115  (kept open for the run)

    def _drop_partial_last_line(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def truncate_after_step(self, step: int) -> None:
        """Keep only records whose `step` is at most `step` (the checkpoint a run resumes from)."""
        self._file.close()
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True)
            if json.loads(line).get("step", 0) <= step
        ]
        atomic_write_bytes(self.path, "".join(kept).encode("utf-8"))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict) -> None:
        self.write_many([record])

    def write_many(self, records: list[dict]) -> None:
        if not records:
            return
        self._file.write("".join(json.dumps(record, default=_plain) + "\n" for record in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot log {type(value).__name__}")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
