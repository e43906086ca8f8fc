import ast
import importlib
import json
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REQUIRED_LAYOUT = [
    "unidoc_rl", "search_engine", "synthetic_data", "LLaMA-Factory", "scripts", "configs", "examples", "tests",
    "benchmarks", "setup.py", "requirements_train.txt", "README.md", "Makefile", ".ci/run",
]  # fmt: skip


def console_scripts(repo_root: Path) -> dict[str, str]:
    """setup.py's console entry points, name -> "module:function", read from its source: the shared environment's
    installed metadata is that of its own checkout, and `make install` regenerates the scripts when setup.py
    changes."""
    tree = ast.parse((repo_root / "setup.py").read_text())
    [call] = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"]
    [entry_points] = [keyword.value for keyword in call.keywords if keyword.arg == "entry_points"]
    declared = ast.literal_eval(entry_points)["console_scripts"]
    return dict(tuple(part.strip() for part in line.split("=")) for line in declared)


CONSOLE_SCRIPTS = console_scripts(Path(__file__).resolve().parents[2])


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


def test_console_commands_are_declared_and_shown_beside_the_module_commands(repo_root):
    assert set(CONSOLE_SCRIPTS) == {
        "unidoc-ingest", "unidoc-build-ivf", "unidoc-search-service", "unidoc-synthesize", "unidoc-convert-sft",
        "unidoc-prepare-data", "unidoc-judge-service", "unidoc-eval", "unidoc-eval-adapters",
        "unidoc-view", "unidoc-demo", "unidoc-tiny-models",
    }  # fmt: skip
    readme = (repo_root / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in CONSOLE_SCRIPTS)
    # `make install` reinstalls (and so writes the console scripts) whenever setup.py changes.
    requirements = re.search(r"^REQUIREMENTS := (.*(?:\\\n.*)*)", (repo_root / "Makefile").read_text(), re.M)
    assert {"setup.py", "pyproject.toml"} <= set(requirements.group(1).replace("\\", " ").split())


@pytest.mark.parametrize("name", sorted(CONSOLE_SCRIPTS))
def test_each_console_command_is_a_callable_that_answers_help(name, monkeypatch, capsys):
    module_name, function_name = CONSOLE_SCRIPTS[name].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    assert callable(function)
    # What the generated script does: sys.exit(function()) with the command line in sys.argv.
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as exit_:
        sys.exit(function())
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_contracts_are_cited_from_documents_in_the_repository(repo_root):
    # DESIGN.md is not part of the repository; each contract is stated in docs/ or README.md.
    cited = re.compile(r"DESIGN(\.md)? ?§")
    folders = ("unidoc_rl", "synthetic_data", "search_engine", "docs", "configs", "scripts", "tests", "benchmarks")
    paths = [
        repo_root / "README.md",
        *(p for folder in folders for p in (repo_root / folder).rglob("*") if p.is_file()),
    ]
    offenders = [
        str(path.relative_to(repo_root))
        for path in paths
        if path.suffix in {".py", ".md", ".yaml", ".jinja", ".txt"} and cited.search(path.read_text(errors="replace"))
    ]
    assert offenders == []


def _code_paths(markdown: str, heading: str, column: int) -> list[str]:
    """The `code` spans in one column (1 = first) of the table under `heading`."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [path for row in rows[1:] for path in re.findall(r"`([^`]+)`", row.split("|")[column])]


def test_the_layout_table_and_the_architecture_page_match_the_tree(repo_root):
    readme = (repo_root / "README.md").read_text()
    architecture = (repo_root / "docs/architecture.md").read_text()
    listed = _code_paths(readme, "## Repository layout", column=1)
    parts = _code_paths(architecture, "## The parts", column=2)
    for path in [*listed, *parts]:
        assert (repo_root / path).exists(), f"{path} is listed but not in the tree"
    # Every part of the package is on both pages: its subpackages and its top-level modules.
    package = repo_root / "unidoc_rl"
    members = [
        f"unidoc_rl/{child.name}/" if child.is_dir() else f"unidoc_rl/{child.name}"
        for child in sorted(package.iterdir())
        if child.name != "__init__.py" and (child.suffix == ".py" or (child / "__init__.py").exists())
    ]
    assert sorted(set(members) - set(listed)) == []
    assert sorted(set(members) - set(parts)) == []
