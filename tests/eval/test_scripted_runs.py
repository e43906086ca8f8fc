"""End to end through `python -m unidoc_rl.eval` with scripted policies, search and judge on loopback."""

from __future__ import annotations

import json
import re

import pytest

from unidoc_rl.eval.__main__ import main
from unidoc_rl.eval.evidence import EVIDENCE_METRICS
from unidoc_rl.eval.runner import read_results

ACCURACY_LIKE = EVIDENCE_METRICS


def run_cli(argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


@pytest.fixture(scope="module")
def oracle_run(world, processor, tiny_policy_dir, tmp_path_factory, kit):
    from unidoc_rl.standins.eval_policies import plan_policy
    from unidoc_rl.standins.policy_server import PolicyServer
    from unidoc_rl.standins.scripted_client import ScriptedLLMClient

    out_dir = tmp_path_factory.mktemp("oracle")
    client = ScriptedLLMClient(
        processor.tokenizer, plan_policy(processor.tokenizer, kit.oracle_plans(world, processor))
    )
    with PolicyServer(client, processor) as server:
        argv = kit.eval_argv(world, server.base_url, tiny_policy_dir, out_dir)
        assert run_cli(argv) == 0
        yield out_dir, argv, server


def test_oracle_scores_one_on_every_metric(oracle_run):
    out_dir, _, _ = oracle_run
    summary = json.loads((out_dir / "summary.json").read_text())
    groups = [summary["overall"]] + [
        group
        for data in summary["benchmarks"].values()
        for group in [data["all"], *(g for values in data["categories"].values() for g in values.values())]
    ]
    for group in groups:
        assert group["accuracy"] == {"mean": 1.0, "ci95": [1.0, 1.0]}
        for name in ACCURACY_LIKE:
            assert group["metrics"][name] in (1.0, None), name
        assert group["metrics"]["invalid_rate"] == 0.0
        assert group["finish_reasons"] == {"answered": 1.0}
        assert group["judge_fallbacks"] == 0
    overall = summary["overall"]
    assert overall["metrics"]["crop_rate"] == 1.0 and overall["metrics"]["gold_crop_f1"] == 1.0
    assert overall["metrics"]["crop_any"] == pytest.approx(1 / 6)
    # The reward of an oracle episode: every component 1 except retrieval of the unanswerable sample (no gold
    # pages: NDCG 0), so its UniDoc total is 0.6 + 0.1 * 3 instead of 1.0.
    assert overall["reward"]["format"] == 1.0 and overall["reward"]["answer"] == 1.0
    assert overall["reward"]["score"] == pytest.approx((5 * 1.0 + 0.9) / 6)
    assert summary["benchmarks"]["mmlongbench"]["all"]["native"]["mmlb_f1"] == 1.0
    assert summary["benchmarks"]["mmlongbench"]["all"]["native"]["mmlb_score"]["mean"] == 1.0
    assert summary["benchmarks"]["slidevqa"]["all"]["native"]["slidevqa_em"]["mean"] == 1.0
    # Every answered episode was judged by the scripted judge (the reward's client and prompt).
    assert summary["run"]["judge"]["verdicts"] == 6
    assert {(r["benchmark"], r["uid"]) for r in read_results(out_dir / "results.jsonl")} == {
        ("slidevqa", "s1"),
        ("slidevqa", "s2"),
        ("vidoseek", "v1"),
        ("vidoseek", "v2"),
        ("mmlongbench", "m1"),
        ("mmlongbench", "m2"),
    }


def test_outputs_written(oracle_run):
    out_dir, _, _ = oracle_run
    for name in ("summary.md", "summary.csv", "accuracy_by_category.png", "turns.png", "finish_reasons.png"):
        assert (out_dir / name).stat().st_size > 0, name
    table = (out_dir / "summary.md").read_text()
    assert "| vidoseek | source_type | layout | 1 | 1 | 1.000 [1.000, 1.000] |" in table
    rows = (out_dir / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("benchmark,category,value,episodes,questions,accuracy,ci_low,ci_high")
    assert len(rows) == 1 + 1 + 3 + (2) + (2 + 2) + (2 + 1)  # header, overall, benchmarks, category values


def test_rerun_skips_done_episodes_and_resumes_a_torn_line(oracle_run):
    out_dir, argv, server = oracle_run
    results = out_dir / "results.jsonl"
    lines = results.read_text().splitlines(keepends=True)
    # A crash mid-write: the last line is torn in half.
    results.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    before = server.requests
    assert run_cli(argv) == 0
    rerun = json.loads((out_dir / "summary.json").read_text())["run"]
    assert (rerun["episodes_skipped"], rerun["episodes_run"]) == (5, 1)
    assert server.requests - before == 3 or server.requests - before == 4  # one episode's turns only
    keys = [r["key"] for r in read_results(results)]
    assert len(keys) == len(set(keys)) == 6
    assert all(line.endswith("\n") for line in results.read_text().splitlines(keepends=True))
    assert run_cli(argv) == 0
    assert json.loads((out_dir / "summary.json").read_text())["run"]["episodes_run"] == 0


def test_unknown_policy_scores_zero_accuracy_with_expected_retrieval(
    world, serve_policy, kit, tiny_policy_dir, tmp_path
):
    server = serve_policy(kit.unknown_plans(world))
    assert run_cli(kit.eval_argv(world, server.base_url, tiny_policy_dir, tmp_path)) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    overall = summary["overall"]
    assert overall["accuracy"] == {"mean": 0.0, "ci95": [0.0, 0.0]}
    # Shown candidates are the first 3 of each question's ranking. Gold ranks (1-based) over the 5 samples with
    # evidence: s1 1, s2 3, v1 1, v2 2, m2 1.
    metrics = overall["metrics"]
    assert metrics["recall@1"] == pytest.approx(3 / 5)
    assert metrics["recall@3"] == pytest.approx(1.0)
    ndcg = [1.0, 1 / 2, 1.0, 1 / 1.5849625007211562, 1.0]
    assert metrics["ndcg"] == pytest.approx(sum(ndcg) / 5)
    # Every search of the 5 samples with evidence showed its gold page; select 0 is right where it is candidate 0
    # (s1, v1, m2). m1 (no gold pages) is left out of both, where the reward's selection credits its select 0.
    assert metrics["gold_shown"] == 1.0
    assert metrics["gold_selection"] == pytest.approx(3 / 5)
    assert overall["reward"]["selection"] == pytest.approx(4 / 6)
    assert metrics["crop_rate"] == 0.0 and metrics["gold_crop_f1"] == 0.0
    assert summary["benchmarks"]["slidevqa"]["categories"]["hop"]["multi-hop"]["metrics"]["recall@1"] == 0.0
    mmlb = summary["benchmarks"]["mmlongbench"]["all"]["native"]
    assert mmlb["mmlb_score"]["mean"] == 0.0 and mmlb["mmlb_f1"] == 0.0
    assert overall["finish_reasons"] == {"answered": 1.0}


def test_judge_outage_falls_back_and_is_counted(world, serve_policy, kit, tiny_policy_dir, tmp_path):
    from unidoc_rl.standins.scripted_llm_server import Reply

    server = serve_policy(kit.oracle_plans(world, kit.processor))
    world.judge.set_script(Reply(status=503))
    try:
        argv = kit.eval_argv(world, server.base_url, tiny_policy_dir, tmp_path)
        argv += ["--override", "reward.reward_kwargs.judge.max_retries=0"]
        assert run_cli(argv) == 0
    finally:
        world.judge.set_script(kit.exact_match_judge())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overall"]["judge_fallbacks"] == 6
    assert summary["run"]["judge"]["fallbacks"] == 6
    # The fallback (ANLS against the reference) scores the oracle's exact answers 1.0, and says it did.
    results = read_results(tmp_path / "results.jsonl")
    assert {r["judge"]["source"] for r in results} == {"fallback"}
    assert all(r["accuracy"] == 1.0 and r["reward"]["judge_fallback"] for r in results)


def test_n_samples_give_pass_at_k_and_concurrency_is_bounded(world, processor, kit, tiny_policy_dir, tmp_path):
    from unidoc_rl.standins.eval_policies import Plan, plan_policy
    from unidoc_rl.standins.policy_server import PolicyServer
    from unidoc_rl.standins.scripted_client import ScriptedLLMClient

    # Right on every other trajectory of a question (the trajectories of a question alternate plans).
    oracle = kit.oracle_plans(world, processor)
    seen: dict[str, int] = {}
    tokenizer = processor.tokenizer
    inner = plan_policy(tokenizer, oracle)
    wrong = plan_policy(tokenizer, {q: Plan(p.replies[:-1] + ("<answer>unknown</answer>",)) for q, p in oracle.items()})
    parity: dict[str, int] = {}

    def script(call):
        if call.request_id not in parity:
            question = tokenizer.decode(call.prompt_ids)
            parity[call.request_id] = seen.setdefault(question, 0)
            seen[question] += 1
        return (inner if parity[call.request_id] % 2 == 0 else wrong)(call)

    with PolicyServer(ScriptedLLMClient(tokenizer, script), processor, delay_s=0.02) as server:
        argv = kit.eval_argv(world, server.base_url, tiny_policy_dir, tmp_path, "--n", "2", "--temperature", "1.0")
        argv[argv.index("--concurrency") + 1] = "3"
        assert run_cli(argv) == 0
        assert 1 < server.max_in_flight <= 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    overall = summary["overall"]
    assert (overall["episodes"], overall["questions"]) == (12, 6)
    assert overall["accuracy"]["mean"] == pytest.approx(0.5)
    assert overall["pass@k"]["1"]["mean"] == pytest.approx(0.5)
    assert overall["pass@k"]["2"]["mean"] == pytest.approx(1.0)
    assert sorted({r["sample_index"] for r in read_results(tmp_path / "results.jsonl")}) == [0, 1]


def test_search_url_rules():
    from unidoc_rl.eval.__main__ import parse_search_urls

    assert parse_search_urls(["http://a:1"], True, {"slidevqa", "vidoseek"}) == {"*": "http://a:1"}
    assert parse_search_urls(["http://a:1"], False, {"slidevqa"}) == {"*": "http://a:1"}
    assert parse_search_urls(["slidevqa=http://a:1", "vidoseek=http://b:2"], False, {"slidevqa", "vidoseek"}) == {
        "slidevqa": "http://a:1",
        "vidoseek": "http://b:2",
    }
    with pytest.raises(SystemExit, match="--merged-corpus"):
        parse_search_urls(["http://a:1"], False, {"slidevqa", "vidoseek"})
    with pytest.raises(SystemExit, match="exactly one"):
        parse_search_urls(["slidevqa=http://a:1"], True, {"slidevqa"})
    with pytest.raises(SystemExit, match="vidoseek"):
        parse_search_urls(["slidevqa=http://a:1"], False, {"slidevqa", "vidoseek"})


def write_index(directory, page_ids):
    from search_engine.manifest import Manifest, ShardEntry, write_manifest

    directory.mkdir(parents=True)
    write_manifest(directory, Manifest(backend="bm25", model="bm25", shards=[ShardEntry("shard-000000", page_ids)]))
    return directory


def test_corpus_check_refuses_samples_whose_evidence_is_not_indexed(world, kit, tiny_policy_dir, tmp_path):
    from unidoc_rl.eval.adapters import main as adapters_main

    pages = [f"{doc}_{page}" for doc in ("deck", "guide", "report") for page in (1, 2, 3)]
    partial = write_index(tmp_path / "index_a", [p for p in pages if p not in ("guide_3", "deck_3")])
    rest = write_index(tmp_path / "index_b", ["deck_3"])
    argv = kit.eval_argv(world, "http://127.0.0.1:9/v1", tiny_policy_dir, tmp_path / "run")
    with pytest.raises(SystemExit, match=r"1 sample\(s\) have evidence pages.*\n  vidoseek/v2: guide_3"):
        main([*argv, "--index_dir", str(partial), str(rest)])
    assert not (tmp_path / "run" / "results.jsonl").exists()
    with pytest.raises(SystemExit) as exit_info:
        adapters_main(["check", "--samples", str(world.samples_path), "--index_dir", str(partial)])
    assert exit_info.value.code == 1


def test_local_engine_backend_from_the_command_line(world, tiny_policy_dir, tmp_path):
    argv = [
        "--samples",
        str(world.samples_path),
        "--out_dir",
        str(tmp_path),
        "--search-url",
        world.search.url,
        "--merged-corpus",
        "--judge-url",
        world.judge.base_url,
        "--model-path",
        "tiny",
        "--limit",
        "2",
        "--experiment",
        "local_cpu",
        "--override",
        "unidoc_agent.max_turns=1",
        "--override",
        "unidoc_agent.max_tokens_per_turn=8",
    ]
    assert run_cli(argv) == 0
    results = read_results(tmp_path / "results.jsonl")
    assert [r["uid"] for r in sorted(results, key=lambda r: r["uid"])] == ["s1", "s2"]
    assert all(r["episode"]["num_turns"] == 1 and 0 < r["tokens"]["model"] <= 8 for r in results)
    assert json.loads((tmp_path / "summary.json").read_text())["run"]["policy"] == str(tiny_policy_dir)


def test_a_released_checkpoints_template_words_the_evaluation(world, serve_policy, kit, tiny_policy_dir, tmp_path):
    """`--override unidoc_agent.prompt_template=FILE`: the policy sees that template's texts, and so do the records."""
    from pathlib import Path

    import unidoc_rl.standins
    from unidoc_rl.env.prompts import load_prompts
    from unidoc_rl.env.vision import CoordinateConvention

    template = str(Path(unidoc_rl.standins.__file__).parent / "alternate_prompts.jinja")
    server = serve_policy(kit.oracle_plans(world, kit.processor))
    override = f"unidoc_agent.prompt_template={template}"
    assert run_cli(kit.eval_argv(world, server.base_url, tiny_policy_dir, tmp_path, "--override", override)) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["overall"]["accuracy"]["mean"] == 1.0  # the oracle still plays every question through
    first_prompt = kit.processor.tokenizer.decode(server.llm_client.calls[0].prompt_ids)
    assert load_prompts(template).system_prompt(CoordinateConvention.ABSOLUTE, 3) in first_prompt
    assert "Task: " in first_prompt and "Question: " not in first_prompt
    for result in read_results(tmp_path / "results.jsonl"):
        observations = [turn["observation"] for turn in result["episode"]["turns"] if turn.get("observation")]
        assert observations[0].startswith("Search [") and " <page 0> <image>" in observations[0]
        assert any(text.startswith("Focus on page ") for text in observations)
        assert not any("Results for: " in text or "Selected Image" in text for text in observations)


def component_cell(html: str, name: str) -> str:
    """The value cell of one reward component's row on an episode page."""
    match = re.search(rf"<tr data-component='{name}'><th>{name}</th><td>.*?</td><td class='num'>([^<]*)</td>", html)
    assert match, f"no {name} row"
    return match.group(1)


def test_the_viewer_shows_a_real_evaluation_runs_reward_and_verdict(
    world, serve_policy, kit, tiny_policy_dir, tmp_path
):
    """The harness's results.jsonl, read by the viewer: every reward component and the verdict on each episode page.
    Two questions are answered without a `<select>` (format 0): the reward's gate keeps its judge out, the harness
    asks the judge for accuracy, and the page must say both without contradicting itself."""
    from unidoc_rl.standins.eval_policies import Plan
    from unidoc_rl.viewer.app import Viewer, ViewerSettings
    from unidoc_rl.viewer.links import ServerLinks

    unselected = {"s2", "m2"}
    uids = {entry["query"]: entry["uid"] for entry in world.samples}
    plans = {
        query: Plan((plan.replies[0], plan.replies[-1])) if uids[query] in unselected else plan
        for query, plan in kit.oracle_plans(world, kit.processor).items()
    }
    server = serve_policy(plans)
    out_dir = tmp_path / "run"
    assert run_cli(kit.eval_argv(world, server.base_url, tiny_policy_dir, out_dir)) == 0
    results = {result["uid"]: result for result in read_results(out_dir / "results.jsonl")}

    viewer = Viewer(ViewerSettings(run_dir=out_dir, pages_dir=world.samples_path.parent / "pages"))
    index = viewer.index
    assert [log.label for log in index.logs] == ["results.jsonl"] and not index.bad_lines
    rows = {row.uid: row for row in index.rows}
    assert sorted(rows) == sorted(results)
    for uid, row in rows.items():
        result = results[uid]
        assert row.reward == result["reward"]["score"]
        assert row.components["format"] == (0.0 if uid in unselected else 1.0)
        assert row.components["answer"] == (0.0 if uid in unselected else 1.0)
        assert row.answered is True and row.correct is True  # the verdict, not the gated answer reward
        evidence = {name: result["metrics"][name] for name in EVIDENCE_METRICS}
        assert row.evidence == {name: value for name, value in evidence.items() if value is not None}
        assert f"benchmark: {result['benchmark']}" in row.categories
    assert rows["s1"].evidence["recall@1"] == 1.0 and rows["m1"].evidence == {}  # m1 has no gold page
    assert rows["s2"].reward == 0.0 and rows["s2"].categories == ("benchmark: slidevqa", "hop: multi-hop")
    # The oracle's UniDoc total: 0.6 answer + 0.1 each for format, retrieval, selection, crop.
    assert rows["s1"].reward == pytest.approx(1.0)

    links = ServerLinks()
    for uid, row in rows.items():
        html = viewer.episode_html(row.source, row.line, links)
        for name in ("format", "retrieval", "selection", "crop", "answer"):
            assert component_cell(html, name) == f"{results[uid]['reward'][name]:.3f}"
        assert "<tr><th>judge verdict</th><td>1 (judge)</td></tr>" in html
        assert "judge not called" not in html
        if uid in unselected:
            assert "answer reward: judge not asked by the reward (the verdict was asked for accuracy)" in html
        else:
            assert "answer reward: judge called" in html
