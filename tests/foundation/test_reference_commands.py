"""The reference repository's README commands, typed as written: its environment variables and URLs reach our
search service, judge service, agent-loop client and train.sh (subprocesses and real services on loopback)."""

from __future__ import annotations

import contextlib
import json
import os
import pkgutil
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from omegaconf import OmegaConf

from search_engine.ingestion import IngestConfig, ingest
from search_engine.search_engine_api import build_parser as search_parser
from unidoc_rl.agent.search import resolve_backend
from unidoc_rl.judge.client import build_judge
from unidoc_rl.rewards.settings import RewardSettings
from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge
from unidoc_rl.standins.serving import free_port

REFERENCE_JUDGE_MODEL = "Qwen/Qwen2.5-72B-Instruct"
TRAIN_ENV = {"MODEL_PATH": "/ckpt/sft", "TRAIN_FILE": "/data/train.parquet", "VAL_FILE": "/data/val.parquet"}
JUDGE_VARIABLES = ("RM_URL", "JUDGE_URL", "JUDGE_MODEL", "UNIDOC_JUDGE_API_KEY")
SCRIPT_COMMANDS = (
    "search_engine/ingestion.py",
    "search_engine/ivf.py",
    "search_engine/search_engine_api.py",
    "synthetic_data/generate_cot_data.py",
    "synthetic_data/convert_to_llamafactory.py",
    "unidoc_rl/judge/evaluator_api.py",
    "scripts/make_sample_corpus.py",
)
"""The commands typed as `python path/to/file.py` (README.md, docs/, the reference repository's README)."""


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any setting these commands read, plus `values`."""
    read = ("SEARCH_", "UNIDOC_SEARCH_", "EVAL_", "OPENAI_BASE_URL", *JUDGE_VARIABLES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(read)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    return {**env, **values}


@contextlib.contextmanager
def service(command: list[str], cwd: Path, env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """Run a service as typed; yields its root URL once GET /health answers 200."""
    url = f"http://127.0.0.1:{port}"
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while True:
                assert process.poll() is None, f"{command} exited with {process.returncode}: {log.read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"{command} did not answer: {log.read_text()[-2000:]}"
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, repo_root: Path) -> Path:
    root = tmp_path_factory.mktemp("reference") / "corpus"
    root.mkdir()
    for name in ("northwind_annual_report_2023.pdf", "city_water_survey.pdf"):
        shutil.copy(repo_root / "examples/corpus" / name, root / name)
    ingest(IngestConfig(dataset_dir=root, dpi=72, progress=False))
    return root


@pytest.fixture(scope="module")
def search_service(corpus: Path, repo_root: Path, tmp_path_factory) -> Iterator[str]:
    """Row 1: `SEARCH_DATASET_DIR=/corpus SEARCH_PORT=9001 python search_engine_api.py` inside search_engine/."""
    port = free_port()
    env = clean_env(SEARCH_DATASET_DIR=str(corpus), SEARCH_PORT=str(port))
    log = tmp_path_factory.mktemp("logs") / "search.log"
    with service([sys.executable, "search_engine_api.py"], repo_root / "search_engine", env, port, log) as url:
        yield url


@pytest.fixture(scope="module")
def judge_llm() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer(exact_match_judge()) as server:
        yield server


@pytest.fixture(scope="module")
def judge_service(judge_llm: ScriptedLLMServer, repo_root: Path, tmp_path_factory) -> Iterator[str]:
    """Row 3: `EVAL_MODEL_NAME=Qwen/Qwen2.5-72B-Instruct EVAL_PORT=8003 python evaluator_api.py` in its folder, with
    the judge LLM's endpoint in OPENAI_BASE_URL and a key its clients must send."""
    port = free_port()
    env = clean_env(
        EVAL_MODEL_NAME=REFERENCE_JUDGE_MODEL,
        EVAL_PORT=str(port),
        OPENAI_BASE_URL=judge_llm.base_url,
        UNIDOC_JUDGE_API_KEY="s3cret",
    )
    log = tmp_path_factory.mktemp("logs") / "judge.log"
    with service([sys.executable, "evaluator_api.py"], repo_root / "unidoc_rl/judge", env, port, log) as url:
        yield url


def test_search_service_reads_the_reference_variables_from_inside_its_folder(search_service: str, corpus: Path):
    health = httpx.get(f"{search_service}/health").json()
    assert (health["num_pages"], health["num_documents"]) == (5, 2)
    body = httpx.post(f"{search_service}/search", json={"queries": ["revenue in Asia"], "top_k": 1}).json()
    assert "results" in body, body
    hit = body["results"][0][0]
    assert hit["page_id"] == "northwind_annual_report_2023_2"
    assert hit["image_file"] == str((corpus / "pages/northwind_annual_report_2023_2.png").resolve())


def test_search_settings_precedence_flags_then_ours_then_the_reference(monkeypatch):
    monkeypatch.setenv("SEARCH_DATASET_DIR", "/reference")
    monkeypatch.setenv("SEARCH_PORT", "9001")
    assert (search_parser().parse_args([]).dataset_dir, search_parser().parse_args([]).port) == ("/reference", 9001)
    monkeypatch.setenv("UNIDOC_SEARCH_PORT", "9002")
    assert search_parser().parse_args([]).port == 9002
    assert search_parser().parse_args(["--port", "9003"]).port == 9003
    help_text = search_parser().format_help()
    assert "SEARCH_DATASET_DIR" in help_text and "flags win, then UNIDOC_SEARCH_*" in " ".join(help_text.split())


def test_a_bad_port_variable_is_named(repo_root: Path):
    result = subprocess.run(
        [sys.executable, "search_engine/search_engine_api.py"],
        cwd=repo_root,
        env=clean_env(SEARCH_PORT="90o1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SEARCH_PORT='90o1' is not an integer" in result.stderr


async def test_the_agent_loop_client_takes_the_search_endpoint_url(search_service: str):
    """Row 2: `export SEARCH_URL=http://127.0.0.1:9001/search` — the agent loop's client searches the service."""
    for url in (f"{search_service}/search", search_service):
        [hits] = await resolve_backend(url).search(["revenue in Asia"], top_k=2)
        assert hits[0].page_id == "northwind_annual_report_2023_2"
    assert resolve_backend(f"{search_service}/search") is resolve_backend(f"{search_service}/")


def test_judge_service_reads_the_reference_variables_from_its_folder(judge_service: str, judge_llm):
    health = httpx.get(f"{judge_service}/health").json()
    assert (health["model"], health["llm_base_url"]) == (REFERENCE_JUDGE_MODEL, judge_llm.base_url)
    prompts = [
        {"query": "q", "reference_answer": "845", "generated_answer": "845"},
        {"query": "q", "reference_answer": "845", "generated_answer": "12"},
    ]
    assert httpx.post(f"{judge_service}/eval", json={"prompts": prompts}).status_code == 401
    answer = httpx.post(f"{judge_service}/eval", json={"prompts": prompts}, headers={"X-API-Key": "s3cret"})
    assert answer.json() == [1.0, 0.0]
    assert {request.body["model"] for request in judge_llm.requests} == {REFERENCE_JUDGE_MODEL}


def test_judge_service_refuses_a_public_bind_without_a_key(repo_root: Path):
    result = subprocess.run(
        [sys.executable, "-m", "unidoc_rl.judge.evaluator_api", "--host", "0.0.0.0"],
        cwd=repo_root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "binding to 0.0.0.0 exposes the service" in result.stderr and "UNIDOC_JUDGE_API_KEY" in result.stderr


@pytest.mark.parametrize("script", SCRIPT_COMMANDS)
def test_each_script_command_answers_help_from_another_folder(script: str, repo_root: Path, tmp_path: Path):
    """`python /path/to/file.py --help` typed elsewhere: the file imports the packages as installed (here: the
    checkout on PYTHONPATH), without editing sys.path itself."""
    assert "sys.path" not in (repo_root / script).read_text()
    result = subprocess.run(
        [sys.executable, str(repo_root / script), "--help"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")


def test_no_file_beside_a_script_command_shadows_a_module(repo_root: Path, tmp_path: Path):
    """A file run as a script has its folder first on sys.path, so a module there named like a stdlib or installed
    one would be imported in that one's place. search_engine/types.py has such a name, but the interpreter imports
    `types` while it starts, before the script's folder is searched; any other such name fails here."""
    probe = "import sys; names = sorted(sys.modules); import json; print(json.dumps(names))"
    started = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    started = set(json.loads(started.stdout))
    assert "types" in started
    site_packages = [path for path in sys.path if path.endswith("site-packages")]
    importable = set(sys.stdlib_module_names) | {module.name for module in pkgutil.iter_modules(site_packages)}
    for folder in sorted({Path(script).parent for script in SCRIPT_COMMANDS}):
        beside = {
            path.name.split(".")[0]
            for path in (repo_root / folder).iterdir()
            if path.suffix in {".py", ".so"} or (path / "__init__.py").exists()
        }
        assert beside & importable <= started, (folder, sorted(beside & importable - started))


def run_train_sh(repo_root: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/train.sh"],
        cwd=repo_root,
        env=clean_env(**TRAIN_ENV, DRY_RUN="1", PYTHON=sys.executable, **env),
        capture_output=True,
        text=True,
        timeout=180,
    )


async def test_train_sh_with_rm_url_judges_through_the_judge_service(
    judge_service: str, search_service: str, repo_root: Path, monkeypatch
):
    """Row 4: `export RM_URL=http://127.0.0.1:8003/eval` then `bash train.sh` (DRY_RUN=1 prints the config)."""
    result = run_train_sh(repo_root, RM_URL=f"{judge_service}/eval", SEARCH_URL=f"{search_service}/search")
    assert result.returncode == 0, result.stderr[-2000:]
    config = OmegaConf.create(yaml.safe_load(result.stdout))
    assert config.unidoc_agent.search_url == f"{search_service}/search"
    settings = RewardSettings.from_mapping(OmegaConf.to_container(config.reward.reward_kwargs))
    assert (settings.judge.backend, settings.judge.base_url) == ("evaluator_service", f"{judge_service}/eval")
    monkeypatch.setenv(settings.judge.api_key_env, "s3cret")  # the trainer's environment holds the service's key
    judge = build_judge(settings.judge)
    try:
        verdicts = await judge.judge_many([("q", "845", "845 million"), ("q", "845", "845")])
    finally:
        await judge.aclose()
    assert [(v.score, v.source) for v in verdicts] == [(0.0, "judge"), (1.0, "judge")]


@pytest.mark.parametrize(
    ("judge_env", "message"),
    [
        ({}, "set RM_URL to the judge service's /eval"),
        ({"RM_URL": "http://127.0.0.1:8003/eval", "JUDGE_URL": "http://127.0.0.1:8000/v1"}, "not both"),
    ],
)
def test_train_sh_needs_exactly_one_judge(repo_root: Path, judge_env: dict, message: str):
    result = run_train_sh(repo_root, SEARCH_URL="http://127.0.0.1:8001/search", **judge_env)
    assert result.returncode == 2
    assert message in result.stderr and result.stdout == ""


def test_service_root_takes_the_root_or_the_endpoint_and_rejects_other_urls():
    from unidoc_rl.common.service_access import service_root

    for url in ("http://h:8001", "http://h:8001/", "http://h:8001/search", " http://h:8001/search/ "):
        assert service_root(url, "/search") == "http://h:8001"
    assert service_root("https://h/api/eval", "/eval") == "https://h/api"
    assert service_root("http://h:8001/research", "/search") == "http://h:8001/research"
    for bad in ("h:8001/search", "", "ftp://h/search", "http:///search"):
        with pytest.raises(ValueError, match="is not an http"):
            service_root(bad, "/search")
