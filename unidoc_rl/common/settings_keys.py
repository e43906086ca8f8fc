"""The one check every settings section shares: a misspelled key is an error, never silently ignored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def reject_unknown_keys(values: Mapping, known: Iterable[str], section: str) -> None:
    known = set(known)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {section} settings {unknown}; known: {sorted(known)}")
