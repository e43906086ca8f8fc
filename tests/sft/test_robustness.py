"""Injected teacher faults are retried or recorded, never crash a run, and never leave a partial line; resume by uid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from unidoc_rl.standins.scripted_teacher import FaultRule, ScriptedTeacher, TeacherFaults
from unidoc_rl.synthesis.convert_to_llamafactory import convert
from unidoc_rl.synthesis.generate_cot_data import main

PICKED = ["nw-asia-2023", "lb-efficiency", "ws-oldtown-use", "sp-350-price", "nw-dividend"]


def read_lines(path):
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "partial last line"
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def picked(samples, tmp_path):
    chosen = [sample for sample in samples if sample["uid"] in PICKED]
    path = tmp_path / "picked.json"
    path.write_text(json.dumps(chosen))
    return chosen, path


def test_faults_are_retried_or_recorded(picked, search_url, corpus_dir, tmp_path, cli_args):
    chosen, data = picked
    faults = TeacherFaults(
        wrong_pages=frozenset({"nw-dividend"}),
        rules=(
            FaultRule("malformed_json", uids=frozenset({"nw-asia-2023"}), roles=frozenset({"plan"}), times=1),
            FaultRule("server_error", uids=frozenset({"lb-efficiency"}), roles=frozenset({"read"}), times=2),
            FaultRule("timeout", uids=frozenset({"ws-oldtown-use"}), roles=frozenset({"region"}), times=1, delay_s=3),
            FaultRule("malformed_json", uids=frozenset({"sp-350-price"}), roles=frozenset({"decide"}), times=None),
        ),
    )
    output = tmp_path / "out.jsonl"
    with ScriptedTeacher(chosen, faults) as teacher:
        args = cli_args(search_url, teacher.base_url, corpus_dir, output, data, "--timeout", "1", "--concurrency", "5")
        assert main(args) == 0

    lines = {line["uid"]: line for line in read_lines(output)}
    assert sorted(lines) == ["lb-efficiency", "nw-asia-2023", "nw-dividend", "ws-oldtown-use"]
    assert lines["nw-asia-2023"]["stages"]["plan"] == {"calls": 2, "retries": 1, "failure": None}
    assert lines["lb-efficiency"]["stages"]["read"] == {"calls": 3, "retries": 2, "failure": None}
    assert lines["ws-oldtown-use"]["stages"]["region"] == {"calls": 2, "retries": 1, "failure": None}
    assert all(line["verdict"] for uid, line in lines.items() if uid != "nw-dividend")

    # Wrong pages: the reranker picked a page without the answer twice, the teacher answered, the judge said no.
    wrong = lines["nw-dividend"]
    assert wrong["verdict"] is False and wrong["generated_answer"] == "The documents do not say."
    searches = wrong["episode"]["searches"]
    assert len(searches) == 2 and "northwind_annual_report_2023_1" in searches[0]["candidates"]
    assert "northwind_annual_report_2023_1" not in [step["selected"] for step in searches]

    # The persistent malformed reply: the sample failed at its stage, after the bounded re-asks.
    (failure,) = read_lines(output.with_name("out.failures.jsonl"))
    assert failure["uid"] == "sp-350-price" and failure["stage"] == "decide"
    assert "no valid JSON after 3 replies" in failure["error"]
    assert failure["stages"]["decide"]["calls"] == 3 and failure["stages"]["decide"]["failure"]
    summary = json.loads(output.with_name("out.summary.json").read_text())
    assert summary["failures_by_stage"] == {"decide": 1} and summary["succeeded"] == 4 and summary["correct"] == 3

    # The converter keeps the trajectories judged correct, unless told otherwise.
    assert sorted(convert(output).kept) == ["lb-efficiency", "nw-asia-2023", "ws-oldtown-use"]
    assert convert(output, "no").kept == ["nw-dividend"]

    # Rerun: finished samples are skipped (no teacher request), the failed one only with --retry-failed.
    with ScriptedTeacher(chosen) as teacher:
        assert main(cli_args(search_url, teacher.base_url, corpus_dir, output, data)) == 0
        assert teacher.requests == []
        summary = json.loads(output.with_name("out.summary.json").read_text())
        assert (summary["skipped_finished"], summary["skipped_failed"], summary["attempted"]) == (4, 1, 0)
        assert main(cli_args(search_url, teacher.base_url, corpus_dir, output, data, "--retry-failed")) == 0
        assert teacher.asked_uids() == {"sp-350-price"}
    uids = [line["uid"] for line in read_lines(output)]
    assert sorted(uids) == sorted(PICKED) and len(uids) == len(set(uids))


def test_search_service_outage_fails_samples_at_the_search_stage(picked, corpus_dir, tmp_path, cli_args):
    chosen, data = picked
    output = tmp_path / "out.jsonl"
    with ScriptedTeacher(chosen) as teacher:
        dead = "http://127.0.0.1:9"  # nothing listens on the discard port
        assert main(cli_args(dead, teacher.base_url, corpus_dir, output, data, "--retries", "1")) == 0
    assert read_lines(output) == []
    failures = read_lines(output.with_name("out.failures.jsonl"))
    assert sorted(f["uid"] for f in failures) == sorted(PICKED)
    assert {f["stage"] for f in failures} == {"search"}
    assert all(f["stages"]["search"]["calls"] == 2 for f in failures)  # one try and one retry, then recorded


def test_bad_samples_are_recorded_not_fatal(search_url, corpus_dir, samples, tmp_path, cli_args):
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps([samples[0], {"uid": "no-query", "reference_answer": "x"}, "not an object"]))
    output = tmp_path / "out.jsonl"
    with ScriptedTeacher(samples) as teacher:
        assert main(cli_args(search_url, teacher.base_url, corpus_dir, output, data)) == 0
    assert [line["uid"] for line in read_lines(output)] == [samples[0]["uid"]]
    failures = {f["uid"]: f for f in read_lines(output.with_name("out.failures.jsonl"))}
    assert failures["no-query"]["stage"] == "input" and "query" in failures["no-query"]["error"]
    assert failures["#2"]["error"] == "sample is not a JSON object"


@pytest.mark.slow
def test_kill_9_mid_run_then_resume(samples, search_url, corpus_dir, tmp_path, cli_args, repo_root):
    output = tmp_path / "out.jsonl"
    command = [sys.executable, str(repo_root / "synthetic_data" / "generate_cot_data.py")]
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    with ScriptedTeacher(samples, latency_s=0.05) as teacher:
        args = cli_args(search_url, teacher.base_url, corpus_dir, output, None, "--concurrency", "2")
        process = subprocess.Popen([*command, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if output.exists() and output.read_text().count("\n") >= 3:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL

    text = output.read_text()
    complete = text[: text.rfind("\n") + 1]
    finished = [json.loads(line)["uid"] for line in complete.splitlines()]
    assert 3 <= len(finished) < len(samples)
    # A write cut short by the kill leaves at most a partial last line; simulate the worst case explicitly.
    with open(output, "a") as handle:
        handle.write('{"uid": "nw-dividend", "messages": [')

    with ScriptedTeacher(samples) as teacher:
        assert main(cli_args(search_url, teacher.base_url, corpus_dir, output)) == 0
        asked = teacher.asked_uids()
    assert asked == {sample["uid"] for sample in samples} - set(finished)
    lines = read_lines(output)
    uids = [line["uid"] for line in lines]
    assert sorted(uids) == sorted(sample["uid"] for sample in samples) and len(set(uids)) == len(uids)
    assert uids[: len(finished)] == finished
    assert all(line["verdict"] for line in lines)


def test_the_reference_command_with_a_mineru_layout_parser(samples, search_url, corpus_dir, tmp_path):
    """The flags exactly as the reference quotes them (default agent config: the paper's pixel budget)."""
    from unidoc_rl.standins.scripted_mineru import create_app
    from unidoc_rl.standins.serving import ThreadedUvicorn

    chosen = [sample for sample in samples if sample["uid"] in {"nw-asia-2023", "lb-efficiency"}]
    data = tmp_path / "data.json"
    data.write_text(json.dumps(chosen))
    output = tmp_path / "out.jsonl"
    mineru_app = create_app(corpus_dir)
    with ScriptedTeacher(chosen) as llm, ScriptedTeacher(chosen) as vlm, ThreadedUvicorn(mineru_app) as mineru:
        assert main([
            "--data-path", str(data), "--output-path", str(output),
            "--search-engine-url", f"{search_url}/search", "--layout-parser-url", mineru.url,
            "--llm-engine-url", llm.base_url, "--vllm-engine-url", vlm.base_url,
            "--enable-rerank", "--enable-crop",
        ]) == 0  # fmt: skip
        llm_roles = {r.body["messages"][0]["content"].split(".")[0] for r in llm.requests}
        vlm_roles = {r.body["messages"][0]["content"].split(".")[0] for r in vlm.requests}
    assert llm_roles == {"Role: plan", "Role: decide", "Role: judge"}
    assert vlm_roles == {"Role: rerank", "Role: region", "Role: read"}
    lines = {line["uid"]: line for line in read_lines(output)}
    assert sorted(lines) == ["lb-efficiency", "nw-asia-2023"] and all(line["verdict"] for line in lines.values())
    assert sorted(mineru_app.state.requests) == ["lakeside_battery_study_1.png", "northwind_annual_report_2023_2.png"]
    assert lines["nw-asia-2023"]["stages"]["layout"] == {"calls": 1, "retries": 0, "failure": None}
    sizes = lines["nw-asia-2023"]["episode"]["page_sizes"]["northwind_annual_report_2023_2"]
    assert 200_704 <= sizes["display"][0] * sizes["display"][1] <= 401_408


def test_unusable_inputs_stop_before_any_request(samples, tmp_path, cli_args):
    duplicated = tmp_path / "dup.json"
    duplicated.write_text(json.dumps([samples[0], samples[0]]))
    output = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit, match=r"uids must be unique.*repeated: \['nw-dividend'\]"):
        main(cli_args("http://127.0.0.1:9", "http://127.0.0.1:9/v1", tmp_path, output, duplicated))
    with pytest.raises(SystemExit, match="must hold a JSON list"):
        (tmp_path / "obj.json").write_text("{}")
        main(cli_args("http://127.0.0.1:9", "http://127.0.0.1:9/v1", tmp_path, output, tmp_path / "obj.json"))
    agent_config = tmp_path / "agent.yaml"
    agent_config.write_text("unidoc_agent:\n  min_pixels: null\n  max_pixels: null\n")
    args = cli_args(
        "http://127.0.0.1:9", "http://127.0.0.1:9/v1", tmp_path, output, None, "--agent-config", str(agent_config)
    )
    args = [arg for arg in args if arg not in {"--min-pixels", "6272", "--max-pixels", "50176"}]
    with pytest.raises(SystemExit, match="give --min-pixels and --max-pixels"):
        main(args)
    assert not output.exists()
