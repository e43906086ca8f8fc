"""What the benchmarks need beyond the project's own environment, and one message naming its setup when missing.

`make bench-env` (from the repository root) installs all of it: benchmarks/search_requirements.txt into .venv,
Debian's documentation PDFs (the real pages of search_scale_bench.py), fast-plaid in its own environment
(`FAST_PLAID_PYTHON`: it pins another torch) and vLLM's environment (vllm_bench.py). `make test` needs none of it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SETUP_COMMAND = "make bench-env"
REPO_ROOT = Path(__file__).resolve().parents[1]
FAST_PLAID_PYTHON = REPO_ROOT / ".venv-fastplaid" / "bin" / "python"
"""The interpreter of fast-plaid's environment as `make bench-env` creates it."""


def missing_extra(what: str) -> SystemExit:
    """The exit a benchmark raises when `what` (a sentence part naming the missing thing) is not installed."""
    return SystemExit(f"{what}: run `{SETUP_COMMAND}` in {REPO_ROOT} (it installs every benchmark's extras)")


def require_modules(purpose: str, *modules: str) -> None:
    """Exit with the setup command when any of `modules` cannot be imported."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise missing_extra(f"{purpose} needs the Python module(s) {', '.join(missing)}, not installed here")


def require_any_file(purpose: str, paths: list[str]) -> None:
    """Exit with the setup command when none of `paths` exists."""
    if not any(Path(path).exists() for path in paths):
        raise missing_extra(f"{purpose} needs at least one of {', '.join(paths)}, none exists")
