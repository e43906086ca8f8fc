import json
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REQUIRED_LAYOUT = [
    "unidoc_rl", "search_engine", "synthetic_data", "LLaMA-Factory", "scripts", "configs", "examples", "tests",
    "benchmarks", "setup.py", "requirements_train.txt", "README.md", "Makefile", ".ci/run",
]  # fmt: skip


def _requirements(path: Path) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    parsed = [Requirement(line) for line in lines if line]
    return {req.name.lower(): req for req in parsed}


def test_repository_layout(repo_root):
    missing = [name for name in REQUIRED_LAYOUT if not (repo_root / name).exists()]
    assert missing == []


def test_train_extra_pins_verl_and_a_transformers_that_verl_and_colpali_both_accept(repo_root):
    train = _requirements(repo_root / "requirements_train.txt")
    assert str(train["verl"].specifier) == "==0.9.1" and train["verl"].extras == {"verl-core"}
    pinned = Version(str(train["transformers"].specifier).removeprefix("=="))
    # verl 0.9.1: >=5.5.3,!=5.6.0,<5.11; colpali-engine 0.3.18: >=5.3,<6.
    assert Version("5.5.3") <= pinned < Version("5.11") and pinned != Version("5.6.0")
    search = _requirements(repo_root / "requirements_search.txt")
    assert search["transformers"].specifier == train["transformers"].specifier


def test_cpu_install_holds_torch_and_keeps_torchvision_out(repo_root):
    assert _requirements(repo_root / "constraints.txt")["torch"].specifier == Requirement("torch==2.13.0").specifier
    cpu_files = ["requirements_search.txt", "requirements_train.txt", "requirements_dev.txt"]
    assert all("torchvision" not in _requirements(repo_root / name) for name in cpu_files)
    assert "torchvision" in _requirements(repo_root / "requirements_gpu.txt")
    makefile = (repo_root / "Makefile").read_text()
    assert re.search(r"--no-deps -r requirements_nodeps.txt", makefile)
    assert makefile.count("-c constraints.txt") >= 2
    gpu = _requirements(repo_root / "requirements_gpu.txt")
    assert str(gpu["vllm"].specifier) == "==0.24.0"


def test_ci_runs_the_readme_test_command(repo_root):
    assert "make test" in (repo_root / "README.md").read_text()
    assert "make test" in (repo_root / ".ci/run").read_text()


def test_llamafactory_dataset_registration_matches_the_sft_format(repo_root):
    info = json.loads((repo_root / "LLaMA-Factory/data/dataset_info.json").read_text())
    entry = info["unidoc_sft"]
    assert entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "images": "images"}
    assert entry["tags"]["user_tag"] == "user" and entry["tags"]["assistant_tag"] == "assistant"
