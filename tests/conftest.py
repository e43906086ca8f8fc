"""Shared fixtures: the suite runs offline, on CPU, with the tiny models built once into the cache."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tiny_policy_dir() -> Path:
    from unidoc_rl.standins.tiny_models import tiny_policy_path

    return tiny_policy_path()


@pytest.fixture(scope="session")
def tiny_retriever_dir() -> Path:
    from unidoc_rl.standins.tiny_models import tiny_retriever_path

    return tiny_retriever_path()
