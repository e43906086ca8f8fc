"""What the tests of `bash scripts/train.sh` on CPU share: the services a run needs and a runner that reads the
metrics verl's console logger prints per step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unidoc_rl.standins.sample_corpus import index_sample_corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
STEP_LINE = re.compile(r"^(?:\x1b\[[0-9;]*m)?(?:\(TaskRunnerV1 pid=\d+\)(?:\x1b\[[0-9;]*m)? )?step:(\d+) - (.*)$")


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """The sample corpus's RL parquet, the search service over its bm25 index and a scripted judge, on loopback."""
    from search_engine.search_engine_api import ServiceConfig, create_app
    from unidoc_rl.data.prepare import main as prepare_main
    from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge
    from unidoc_rl.standins.serving import ThreadedUvicorn

    root = tmp_path_factory.mktemp("main_ppo")
    corpus = index_sample_corpus(root / "corpus")
    prepare_main(
        [
            "--samples",
            str(REPO_ROOT / "examples/samples.json"),
            "--out_dir",
            str(root / "data"),
            "--index_dir",
            str(corpus / "index"),
            "--val_size",
            "2",
        ]
    )
    with (
        ThreadedUvicorn(create_app(ServiceConfig(dataset_dir=str(corpus))), lifespan="off") as search,
        ScriptedLLMServer(exact_match_judge()) as judge,
    ):
        yield {"root": root, "search_url": search.url, "judge_url": judge.base_url}


@pytest.fixture(scope="module")
def train_sh(services):
    """Runs `VERL_PLATFORM=cpu bash scripts/train.sh` (with `python`, on `services`); returns the metrics verl's
    console logger printed per step (numbers as floats), the whole output, and the seconds it took."""

    def run(
        *overrides: str, python: str = sys.executable, model_path: str = "tiny", timeout_s: int = 900
    ) -> tuple[dict[int, dict[str, float | str]], str, float]:
        root = services["root"]
        env = {
            **os.environ,
            "VERL_PLATFORM": "cpu",
            "MODEL_PATH": model_path,
            "TRAIN_FILE": str(root / "data/train.parquet"),
            "VAL_FILE": str(root / "data/val.parquet"),
            "SEARCH_URL": services["search_url"],
            "JUDGE_URL": services["judge_url"],
            "PYTHON": python,
            "RAY_DEDUP_LOGS": "0",
        }
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "scripts/train.sh", *overrides],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        seconds = time.monotonic() - started
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-6000:]
        steps: dict[int, dict[str, float | str]] = {}
        for line in output.splitlines():
            match = STEP_LINE.match(line.strip())
            if match:
                pairs = (item.split(":", 1) for item in match.group(2).split(" - ") if ":" in item)
                steps.setdefault(int(match.group(1)), {}).update({key: _number(text) for key, text in pairs})
        return steps, output, seconds

    return run


def _number(text: str) -> float | str:
    try:
        return float(re.sub(r"^np\.float\d+\((.*)\)$", r"\1", text))
    except ValueError:
        return text
