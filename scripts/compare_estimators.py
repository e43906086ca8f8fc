"""Compare reward and credit settings on the demo: the demo's GRPO stage from one SFT checkpoint under several variants.

Variants (same SFT checkpoint, seed, steps and data; only the reward and estimator differ):
  default            reward=unidoc, algorithm.adv_estimator=grpo (the paper's)
  strict             reward.reward_kwargs.strict=true, grpo
  strict+per_action  strict, algorithm.adv_estimator=unidoc_per_action (docs/rewards.md, "Credit assignment")

Each GRPO checkpoint is evaluated on the held-out questions with the evaluation harness (`python -m unidoc_rl.eval`),
and the harness's figures (format, invalid rate, retrieval NDCG, and the evidence metrics: gold shown, selection when
gold shown, crop rate, gold crop F1; accuracy, mean reward) are printed side by side, with each run's per-step
training metrics (reward spread, |advantage| per action kind, sign-flip share). The SFT checkpoint, index and page
images come from the demo (`make demo`, outputs/demo); the demo is run first when --demo_dir holds none.

On CPU the policy is the demo's tiny random-weight model trained for a few steps: the comparison proves the
plumbing, not which setting trains a better agent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "strict": ["reward.reward_kwargs.strict=true"],
    "strict+per_action": ["reward.reward_kwargs.strict=true", "algorithm.adv_estimator=unidoc_per_action"],
}
STEP_METRICS = {
    "reward": "critic/score/mean",
    "std_within_groups": "unidoc/reward/std_within_groups",
    "abs_adv_search": "unidoc/credit/abs_advantage/search",
    "abs_adv_select": "unidoc/credit/abs_advantage/select",
    "abs_adv_bbox": "unidoc/credit/abs_advantage/bbox",
    "abs_adv_answer": "unidoc/credit/abs_advantage/answer",
    "sign_flip_share": "unidoc/credit/sign_flip_share",
    "unmapped": "unidoc/credit/unmapped",
}
logger = logging.getLogger("compare_estimators")


def step_metrics(path: Path) -> list[dict]:
    """Per training step, the metrics of STEP_METRICS from verl's file logger."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        data = entry.get("data", entry)
        if "critic/score/mean" not in data:
            continue
        row = {"step": entry.get("step")}
        row.update({name: data.get(key) for name, key in STEP_METRICS.items()})
        rows.append(row)
    return rows


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--demo_dir", type=Path, default=REPO_ROOT / "outputs/demo", help="the demo's output (SFT checkpoint, index)"
    )
    parser.add_argument("--out_dir", type=Path, default=REPO_ROOT / "outputs/compare_estimators")
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per variant (the demo's default)")
    parser.add_argument(
        "--sft-epochs", type=float, default=24.0, help="when the demo runs first: its SFT epochs (the demo's default)"
    )
    parser.add_argument("--seed", type=int, default=0, help="data shuffling and rollout sampling seed, every variant")
    parser.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS), help="which variants to run"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every variant's trainer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from unidoc_rl import demo
    from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge

    started = time.perf_counter()
    demo_dir, out = args.demo_dir.resolve(), args.out_dir.resolve()
    sft_checkpoint = demo_dir / "sft" / "checkpoint"
    if not (sft_checkpoint / "model.safetensors").exists():
        logger.info("no SFT checkpoint in %s: running the demo first", demo_dir)
        # Only its SFT checkpoint, index and page images are used here: one GRPO step is enough of its own stage.
        command = [sys.executable, "-m", "unidoc_rl.demo", "--out_dir", str(demo_dir), "--steps", "1"]
        command += ["--sft-epochs", str(args.sft_epochs)]
        subprocess.run(command, cwd=REPO_ROOT, check=True)
    out.mkdir(parents=True, exist_ok=True)
    commands = demo.Commands(out / "commands.sh")
    python = sys.executable
    results: dict[str, dict] = {}
    with ExitStack() as services:
        search_url = services.enter_context(
            demo.search_service(demo_dir / "index", demo_dir / "pages", out / "search_service.log")
        )
        judge = services.enter_context(ScriptedLLMServer(exact_match_judge()))
        data_dir = out / "data"
        commands.run(
            [python, "-m", "unidoc_rl.data.prepare", "--samples", str(demo.TRAIN_SAMPLES), "--out_dir",
             str(data_dir), "--index_dir", str(demo_dir / "index"), "--val_size", "4"]
        )  # fmt: skip
        for name in args.variants:
            run_dir = out / name.replace("+", "_")
            checkpoint = run_dir / "checkpoints" / f"global_step_{args.steps}" / "actor" / "huggingface"
            (run_dir / "logs").mkdir(parents=True, exist_ok=True)
            logger.info("%s: GRPO from the SFT checkpoint (%d steps)", name, args.steps)
            if not (checkpoint / "model.safetensors").exists():
                commands.run(
                    ["bash", "scripts/train.sh", f"trainer.default_local_dir={run_dir / 'checkpoints'}",
                     f"unidoc_trainer.trajectory_log={run_dir / 'logs/trajectories.jsonl'}",
                     f"trainer.total_training_steps={args.steps}", f"trainer.save_freq={args.steps}",
                     f"data.seed={args.seed}", f"actor_rollout_ref.rollout.seed={args.seed}",
                     *VARIANTS[name], *args.overrides],
                    env={"VERL_PLATFORM": "cpu", "EXPERIMENT": demo.EXPERIMENT, "MODEL_PATH": str(sft_checkpoint),
                         "TRAIN_FILE": str(data_dir / "train.parquet"), "VAL_FILE": str(data_dir / "val.parquet"),
                         "SEARCH_URL": search_url, "JUDGE_URL": judge.base_url, "PYTHON": python,
                         "VERL_FILE_LOGGER_PATH": str(run_dir / "logs/metrics.jsonl"), "RAY_DEDUP_LOGS": "0"},
                    log=run_dir / "train.log",
                    progress=demo.VERL_PROGRESS,
                )  # fmt: skip
            commands.run(
                [python, "-m", "unidoc_rl.training.hf_checkpoint", str(checkpoint), "--base-model", str(sft_checkpoint)]
            )
            logger.info("%s: evaluate on the held-out questions", name)
            commands.run(
                [python, "-m", "unidoc_rl.eval", "--samples", str(demo.HELDOUT_SAMPLES), "--search-url", search_url,
                 "--index_dir", str(demo_dir / "index"), "--judge-url", judge.base_url, "--model-path",
                 str(checkpoint), "--experiment", demo.EXPERIMENT, "--out_dir", str(run_dir / "eval")]
            )  # fmt: skip
            results[name] = {
                "held_out": demo.table_row(demo.overall(run_dir / "eval")),
                "grpo_steps": step_metrics(run_dir / "logs/metrics.jsonl"),
            }
    summary = {
        "variants": results,
        "sft_checkpoint": str(sft_checkpoint),
        "steps": args.steps,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\nHeld-out samples after GRPO (the evaluation harness's summary.json, overall):\n")
    print(demo.format_table({name: result["held_out"] for name, result in results.items()}))
    print("\nPer GRPO step (verl's metrics and the credit metrics; None: not logged that step):\n")
    for name, result in results.items():
        for row in result["grpo_steps"]:
            cells = ", ".join(f"{key}={_cell(value)}" for key, value in row.items())
            print(f"{name}: {cells}")
    print(f"\ndone in {summary['seconds']:.0f} s; summary: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
