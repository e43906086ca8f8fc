"""End to end through `python -m unidoc_rl.eval`: oracle and "unknown" policies, resume, and the outputs."""

from __future__ import annotations

import json

import pytest

from unidoc_rl.eval.__main__ import main
from unidoc_rl.eval.runner import read_results


def run_cli(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_oracle_scores_one_everywhere(world, serve_policy, processor, kit, tiny_policy_dir, tmp_path):
    server = serve_policy(kit.oracle_plans(world, processor))
    assert run_cli(kit.eval_argv(world, server.base_url, tiny_policy_dir, tmp_path)) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    print(json.dumps(summary["overall"], indent=1))
    assert summary["overall"]["accuracy"]["mean"] == 1.0
