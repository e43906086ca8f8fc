"""`python -m unidoc_rl.eval`: evaluate a policy on unified benchmark samples, or compare finished runs.

    python -m unidoc_rl.eval --samples data/eval/slidevqa.json data/eval/mmlongbench.json \
        --search-url http://search:8001 --merged-corpus --judge-url http://judge:8000/v1 \
        --policy-url http://policy:8000/v1 --policy-model unidoc-7b --tokenizer-path exports/unidoc-7b \
        --out_dir runs/unidoc-7b
    python -m unidoc_rl.eval ... --model-path exports/unidoc-3b --device cuda --out_dir runs/unidoc-3b
    python -m unidoc_rl.eval --compare runs/unidoc-3b runs/unidoc-7b --paper paper.json --out_dir runs/compare

The episode rules come from the training config (`configs/unidoc_grpo.yaml`, `--experiment` overlay, Hydra
`--override`s): the `unidoc_agent` settings, the rollout lengths and the `reward` section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from unidoc_rl.common.atomic import atomic_write_json
from unidoc_rl.config import CONFIG_DIR, TINY_POLICY, compose_config

logger = logging.getLogger("unidoc_rl.eval")


def compose_eval_config(
    model_path: str,
    overrides: list[str] | None = None,
    experiment: str | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> DictConfig:
    """The training config (unidoc_grpo + experiment + overrides), with validation sampling for evaluation."""
    config = compose_config(overrides, experiment)
    OmegaConf.update(config, "actor_rollout_ref.model.path", model_path)
    OmegaConf.update(
        config, "actor_rollout_ref.rollout.agent.agent_loop_config_path", str(CONFIG_DIR / "agent_loop.yaml")
    )
    OmegaConf.update(config, "actor_rollout_ref.rollout.val_kwargs.temperature", float(temperature))
    OmegaConf.update(config, "actor_rollout_ref.rollout.val_kwargs.top_p", float(top_p))
    OmegaConf.update(config, "actor_rollout_ref.rollout.val_kwargs.do_sample", temperature > 0)
    return config


def reward_settings(config: DictConfig, judge_url: str | None, judge_backend: str | None, judge_model: str | None):
    from unidoc_rl.rewards.settings import RewardSettings

    values = OmegaConf.to_container(config.reward.get("reward_kwargs") or {}, resolve=True)
    if judge_url:
        values["answer_scorer"] = "judge"
        judge = dict(values.get("judge") or {})
        judge["base_url"] = judge_url
        if judge_backend:
            judge["backend"] = judge_backend
        if judge_model:
            judge["model"] = judge_model
        values["judge"] = judge
    return RewardSettings.from_mapping(values)


def parse_search_urls(values: list[str], merged: bool, benchmarks: set[str]) -> dict[str, str]:
    """`URL` (every benchmark) or `BENCHMARK=URL` pairs; one URL for several benchmarks needs --merged-corpus."""
    urls: dict[str, str] = {}
    for value in values:
        name, sep, url = value.partition("=")
        if sep and not name.startswith(("http", "inprocess")):
            urls[name] = url
        else:
            urls["*"] = value
    if merged and set(urls) != {"*"}:
        raise SystemExit("--merged-corpus takes exactly one --search-url (the index holding every benchmark's pages)")
    if not merged and "*" in urls and len(benchmarks) > 1 and not set(benchmarks) <= set(urls):
        raise SystemExit(
            f"the samples span benchmarks {sorted(benchmarks)} but one search URL serves them all: pass "
            "--merged-corpus to evaluate against one merged index, or BENCHMARK=URL per benchmark"
        )
    missing = sorted(benchmarks - set(urls)) if "*" not in urls else []
    if missing:
        raise SystemExit(f"no --search-url for benchmarks {missing}")
    return urls


def corpus_check(samples, index_dirs: list[str]) -> None:
    from unidoc_rl.data.prepare import index_page_ids
    from unidoc_rl.eval.samples import missing_from_index

    known: set[str] = set()
    for directory in index_dirs:
        known |= index_page_ids(Path(directory))
    absent = missing_from_index(samples, known)
    if absent:
        lines = "\n".join(f"  {uid}: {', '.join(pages)}" for uid, pages in list(absent.items())[:50])
        raise SystemExit(f"{len(absent)} sample(s) have evidence pages that the index does not hold:\n{lines}")


def build_policy(args, config: DictConfig):
    """(llm client, processor) for the local engine or a served policy (`vllm serve`)."""
    from unidoc_rl.agent.verl_worker import rope_processor

    rollout = config.actor_rollout_ref.rollout
    if args.policy_url:
        from unidoc_rl.engine.openai_policy import OpenAIPolicyClient, image_token_id

        processor = rope_processor(args.tokenizer_path)
        client = OpenAIPolicyClient(
            args.policy_url, args.policy_model, image_token_id=image_token_id(processor), api_key=args.policy_api_key
        )
        return client, processor
    import torch

    from unidoc_rl.engine.local_engine import LocalEngine

    engine = LocalEngine.from_pretrained(
        args.model_path,
        device=args.device,
        dtype=getattr(torch, args.dtype),
        max_model_len=int(rollout.prompt_length) + int(rollout.response_length),
        max_batch_size=args.engine_batch_size,
        seed=args.seed,
    )
    return engine, rope_processor(args.model_path)


def finish(out_dir: Path, samples, extra: dict) -> dict:
    from unidoc_rl.eval.aggregate import summarize
    from unidoc_rl.eval.report import write_plots, write_tables
    from unidoc_rl.eval.runner import RESULTS_FILE, read_results, result_key

    wanted = {result_key(s.benchmark, s.uid, i) for s in samples for i in range(extra["n"])}
    results = [r for r in read_results(out_dir / RESULTS_FILE) if r["key"] in wanted]
    summary = {**summarize(results), "run": extra}
    atomic_write_json(out_dir / "summary.json", summary)
    if results:
        write_tables(summary, out_dir)
        write_plots(summary, results, out_dir)
    return summary


async def evaluate(args) -> dict:
    from unidoc_rl.eval.runner import Evaluator
    from unidoc_rl.eval.samples import load_eval_samples
    from unidoc_rl.rewards.scorer import EpisodeScorer

    samples = load_eval_samples(args.samples)
    if args.limit:
        samples = samples[: args.limit]
    benchmarks = {sample.benchmark for sample in samples}
    urls = parse_search_urls(args.search_url, args.merged_corpus, benchmarks)
    if args.index_dir:
        corpus_check(samples, args.index_dir)
    if TINY_POLICY in (args.model_path, args.tokenizer_path):
        from unidoc_rl.standins.tiny_models import tiny_policy_path

        tiny = str(tiny_policy_path())
        args.model_path = tiny if args.model_path == TINY_POLICY else args.model_path
        args.tokenizer_path = tiny if args.tokenizer_path == TINY_POLICY else args.tokenizer_path
    model_path = args.model_path or args.tokenizer_path
    config = compose_eval_config(model_path, args.override, args.experiment, args.temperature, args.top_p)
    llm_client, processor = build_policy(args, config)
    scorer = EpisodeScorer(reward_settings(config, args.judge_url, args.judge_backend, args.judge_model))
    evaluator = Evaluator(config, llm_client, processor, scorer, urls)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        stats = await evaluator.run(samples, args.out_dir, n=args.n, concurrency=args.concurrency)
        judge_stats = scorer.judge.stats.__dict__ if scorer.judge is not None else None
    finally:
        await evaluator.aclose()
    extra = {
        "n": args.n,
        "temperature": args.temperature,
        "policy": args.policy_url or args.model_path,
        "search_urls": urls,
        "merged_corpus": args.merged_corpus,
        "answer_scorer": scorer.settings.answer_scorer.value,
        "episodes_run": stats.episodes,
        "episodes_skipped": stats.skipped,
        "episode_errors": stats.errors,
        "wall_s": stats.wall_s,
        "episodes_per_s": stats.episodes_per_s,
        "judge": judge_stats,
    }
    summary = finish(args.out_dir, samples, extra)
    if stats.errors:
        logger.warning("%d episode(s) failed (see errors.jsonl); rerun the same command to retry them", stats.errors)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m unidoc_rl.eval",
        description="Evaluate a visual-RAG policy under the training rules (agent loop, budgets, rewards, judge).",
    )
    parser.add_argument("--samples", type=Path, nargs="+", help="unified sample files (see unidoc_rl.eval.adapters)")
    parser.add_argument("--out_dir", type=Path, required=True, help="results.jsonl, summary.json, tables, plots")
    parser.add_argument(
        "--search-url", action="append", default=[], help="search service URL, or BENCHMARK=URL (repeatable)"
    )
    parser.add_argument("--merged-corpus", action="store_true", help="one index holds every benchmark's pages")
    parser.add_argument("--index_dir", nargs="+", default=None, help="check every evidence page is in these indexes")
    parser.add_argument("--judge-url", default=None, help="judge endpoint (OpenAI-compatible /v1, or judge service)")
    parser.add_argument("--judge-backend", choices=["openai", "evaluator_service"], default=None)
    parser.add_argument("--judge-model", default=None, help="model name sent to the judge endpoint")
    policy = parser.add_argument_group("policy (one of --policy-url or --model-path)")
    policy.add_argument(
        "--policy-url",
        default=None,
        help="root (or /v1) of a stock `vllm serve CHECKPOINT` (vLLM >= 0.24): images go through its "
        "/v1/chat/completions/render, turns through /inference/v1/generate as token ids; a server that drops images "
        "or miscounts tokens fails the episode (errors.jsonl)",
    )
    policy.add_argument("--policy-model", default=None, help="model name the endpoint serves (--served-model-name)")
    policy.add_argument("--policy-api-key", default=None)
    policy.add_argument(
        "--tokenizer-path", default=None, help="the served checkpoint's tokenizer and processor files (local folder)"
    )
    policy.add_argument("--model-path", default=None, help="checkpoint for the local engine ('tiny': the test policy)")
    policy.add_argument("--device", default="cpu")
    policy.add_argument("--dtype", default="float32")
    policy.add_argument("--engine-batch-size", type=int, default=16, help="local engine: requests generated together")
    parser.add_argument("--n", type=int, default=1, help="samples per question (pass@k); needs --temperature > 0")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="local engine sampling seed")
    parser.add_argument("--concurrency", type=int, default=32, help="episodes in flight")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N samples")
    parser.add_argument("--experiment", default=None, help="configs/experiment overlay (e.g. local_cpu)")
    parser.add_argument("--override", action="append", default=[], help="Hydra override of the training config")
    parser.add_argument("--compare", type=Path, nargs="+", default=None, help="finished run folders to compare")
    parser.add_argument("--paper", type=Path, default=None, help="JSON of reported figures, added as rows")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.compare:
        from unidoc_rl.eval.report import write_comparison

        write_comparison(args.compare, args.out_dir, args.paper)
        print((args.out_dir / "compare.md").read_text())
        return
    if not args.samples or not args.search_url:
        raise SystemExit("--samples and --search-url are required (or --compare RUN_DIR...)")
    if bool(args.policy_url) == bool(args.model_path):
        raise SystemExit("give exactly one of --policy-url (with --policy-model and --tokenizer-path) or --model-path")
    if args.policy_url and not (args.policy_model and args.tokenizer_path):
        raise SystemExit("--policy-url needs --policy-model and --tokenizer-path (the served checkpoint's processor)")
    if args.n > 1 and args.temperature <= 0:
        raise SystemExit("--n > 1 samples the same greedy episode n times; give --temperature > 0")
    from unidoc_rl.eval.samples import SampleError

    try:
        summary = asyncio.run(evaluate(args))
    except SampleError as error:
        raise SystemExit(str(error)) from None
    overall = summary.get("overall")
    print(json.dumps({"out_dir": str(args.out_dir), "accuracy": overall and overall["accuracy"], **summary["run"]}))
    sys.exit(1 if summary["run"]["episode_errors"] else 0)


if __name__ == "__main__":
    main()
