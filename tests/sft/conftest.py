"""Fixtures for the SFT stage: the real search service over the sample corpus, the scripted teacher, an oracle run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from unidoc_rl.standins.sample_corpus import index_sample_corpus
from unidoc_rl.standins.scripted_teacher import ScriptedTeacher
from unidoc_rl.standins.serving import ThreadedUvicorn

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_JSON = REPO_ROOT / "examples" / "samples.json"
TINY_PIXELS = ("--min-pixels", "6272", "--max-pixels", "50176")
"""The tiny policy's processor budget (8*28*28 .. 64*28*28): the display budget its agent loop uses."""


@pytest.fixture(scope="session")
def samples() -> list[dict]:
    return json.loads(SAMPLES_JSON.read_text())


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return index_sample_corpus(tmp_path_factory.mktemp("sft_corpus"))


@pytest.fixture(scope="session")
def search_url(corpus_dir):
    from search_engine.search_engine_api import ServiceConfig, create_app

    with ThreadedUvicorn(create_app(ServiceConfig(dataset_dir=str(corpus_dir))), lifespan="off") as server:
        yield server.url


@pytest.fixture(scope="session")
def oracle_teacher(samples):
    with ScriptedTeacher(samples) as teacher:
        yield teacher


def _cli_args(search_url: str, teacher_url: str, corpus_dir: Path, output: Path, data: Path | None = None, *extra):
    """generate_cot_data.py arguments as the reference calls it, plus the PDF folder and the tiny pixel budget."""
    return [
        "--data-path", str(data or SAMPLES_JSON), "--output-path", str(output),
        "--search-engine-url", f"{search_url}/search",
        "--llm-engine-url", teacher_url, "--vllm-engine-url", teacher_url,
        "--enable-rerank", "--enable-crop", "--pdf-dir", str(corpus_dir),
        *TINY_PIXELS, "--no-progress", "--backoff", "0.01", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def cli_args():
    """`cli_args(search_url, teacher_url, corpus_dir, output, data=None, *extra)`: the CLI's argument list."""
    return _cli_args


@pytest.fixture(scope="session")
def oracle_run(tmp_path_factory, search_url, oracle_teacher, corpus_dir, samples):
    """The CLI run in this process over every bundled sample with the oracle teacher."""
    from unidoc_rl.synthesis.generate_cot_data import main

    output = tmp_path_factory.mktemp("oracle") / "out.jsonl"
    assert main(_cli_args(search_url, oracle_teacher.base_url, corpus_dir, output)) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    return SimpleNamespace(output=output, lines={line["uid"]: line for line in lines}, samples=samples)
