"""The whole pipeline end to end on the embedded default: CPU, tiny offline models, the bundled sample corpus.

    make demo            (or: python -m unidoc_rl.demo --out_dir outputs/demo)

1. renders and indexes examples/corpus (bm25 over the PDF text layer) and serves search on loopback;
2. synthesizes teacher trajectories for the training samples (synthetic_data/generate_cot_data.py against the
   scripted teacher), exports them for LLaMA-Factory, and fine-tunes the tiny policy in LLaMA-Factory's own
   environment (.venv-sft);
3. evaluates the SFT checkpoint with the evaluation harness (held-out samples, and the training samples);
4. trains the SFT checkpoint with GRPO through verl's own trainer (`scripts/train.sh` with VERL_PLATFORM=cpu: Ray,
   FSDP2 on gloo, the project's agent loop and dense reward), answers judged by the scripted judge, and adds the
   processor files to its Hugging Face checkpoint;
5. evaluates the untrained policy and the GRPO checkpoint the same way, and builds the viewer's static sites;
6. prints one table (the evaluation harness's own figures) and the paths of everything it wrote.

Every stage runs the command a researcher would run (`commands.sh` lists them) and leaves its output under
--out_dir; a rerun skips or resumes the stages whose output is complete. All agent settings (budgets, pixel
budget, convention) come from configs/experiment/demo_cpu.yaml, for synthesis, training and evaluation alike.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "demo_cpu"
AGENT_CONFIG = REPO_ROOT / "configs/experiment" / f"{EXPERIMENT}.yaml"
TRAIN_SAMPLES = REPO_ROOT / "examples/samples_train.json"
HELDOUT_SAMPLES = REPO_ROOT / "examples/samples_heldout.json"
SFT_CONFIG = "LLaMA-Factory/examples/train_full/qwen2_5vl_full_sft_cpu.yaml"
TABLE_COLUMNS = (
    ("format", ("reward", "format")),
    ("invalid rate", ("metrics", "invalid_rate")),
    ("retrieval NDCG", ("metrics", "ndcg")),
    ("gold shown", ("metrics", "gold_shown")),
    ("selection when gold shown", ("metrics", "gold_selection")),
    ("crop rate", ("metrics", "crop_rate")),
    ("gold crop F1", ("metrics", "gold_crop_f1")),
    ("accuracy", ("accuracy", "mean")),
    ("mean reward", ("reward", "score")),
)
"""Columns of the final table: (title, path into an evaluation's summary.json `overall`). Selection and crop are the
evidence metrics (unidoc_rl/eval/evidence.py), not the reward's components, which credit actions they cannot judge;
`format` and `mean reward` are the reward's."""
GRPO_STEP_METRICS = {
    "reward": "critic/score/mean",
    "reward_std_within_groups": "unidoc/reward/std_within_groups",
    "advantage_max": "critic/advantages/max",
    "pg_loss": "actor/pg_loss",
    "grad_norm": "actor/grad_norm",
}
"""What the demo reports of every GRPO step: its name → verl's metric."""
logger = logging.getLogger("unidoc_rl.demo")


VERL_PROGRESS = re.compile(r"Training Progress|step:\d+ - ")
"""Lines of verl's output that tell how far training is."""
PROGRESS_EVERY_S = 20.0
"""While a stage's output goes to its log, the log's latest line is shown this often."""


def last_progress_line(log: Path, pattern: re.Pattern | None = None, width: int = 160) -> str:
    """The last non-empty line of a log that matches `pattern` (any, without one), progress bars included (they
    redraw with carriage returns)."""
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - 65536))
        tail = handle.read().decode("utf-8", errors="replace")
    fragments = [part.strip() for part in tail.replace("\r", "\n").split("\n") if part.strip()]
    fragments = [part for part in fragments if pattern is None or pattern.search(part)]
    return fragments[-1][:width] if fragments else "(starting)"


class Commands:
    """Runs each stage's command as a subprocess and records it in commands.sh, so any stage can be rerun alone."""

    def __init__(self, path: Path):
        self.path = path
        path.write_text(
            "#!/usr/bin/env bash\n# The commands `make demo` ran, in order. To rerun a stage alone, start the services"
            " it names first (the lines marked `service`, on the same loopback ports).\n"
        )

    def service(self, command: list[str]) -> None:
        """Records a service the following stages talk to (started by the demo itself)."""
        with open(self.path, "a") as handle:
            handle.write(f"# service: {shlex.join(command)} &\n")

    def run(
        self,
        command: list[str],
        env: dict[str, str] | None = None,
        log: Path | None = None,
        progress: re.Pattern | None = None,
    ) -> None:
        """Runs `command`; with `log`, its output goes there and the log's latest line (matching `progress`, when
        given) is shown every PROGRESS_EVERY_S seconds."""
        prefix = " ".join(f"{key}={shlex.quote(value)}" for key, value in (env or {}).items())
        line = (prefix + " " if prefix else "") + shlex.join(command)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")
        logger.info("$ %s", line)
        if log is None:
            subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, check=True)
            return
        with open(log, "w") as handle:
            process = subprocess.Popen(
                command, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=handle, stderr=subprocess.STDOUT
            )
            while process.poll() is None:
                try:
                    process.wait(timeout=PROGRESS_EVERY_S)
                except subprocess.TimeoutExpired:
                    logger.info("%s: %s", log.name, last_progress_line(log, progress))
        if process.returncode != 0:
            raise SystemExit(f"{command[1]} failed ({process.returncode}); see {log}")


def search_service_command(index_dir: Path, pages_dir: Path, port: int) -> list[str]:
    return [
        sys.executable, "search_engine/search_engine_api.py", "--index_dir", str(index_dir), "--pages_dir",
        str(pages_dir), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


@contextmanager
def search_service(index_dir: Path, pages_dir: Path, log_path: Path, timeout_s: float = 60.0):
    """The search service as a subprocess on loopback; yields its URL once /health answers."""
    from search_engine.client import SearchClient, SearchError
    from unidoc_rl.standins.serving import free_port

    port = free_port()
    command = search_service_command(index_dir, pages_dir, port)
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = SearchClient(url, timeout=2.0, retries=0)
            deadline = time.monotonic() + timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"search service exited with {process.returncode}; see {log_path}")
                try:
                    health = client.health()
                    break
                except SearchError as error:
                    if time.monotonic() > deadline:
                        message = f"search service did not answer within {timeout_s}s; see {log_path}"
                        raise RuntimeError(message) from error
                    time.sleep(0.3)
            logger.info("search service at %s: %s", url, health)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


def sft_python() -> str:
    python = REPO_ROOT / ".venv-sft/bin/python"
    if not python.exists():
        raise SystemExit("LLaMA-Factory's environment is missing: run `make sft-env` (make demo creates it)")
    return str(python)


def overall(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["overall"]


def table_row(summary: dict) -> dict[str, float | None]:
    row = {}
    for title, (section, key) in TABLE_COLUMNS:
        value = (summary.get(section) or {}).get(key)
        row[title] = None if value is None else round(float(value), 3)
    return row


def format_table(rows: dict[str, dict[str, float | None]]) -> str:
    titles = [title for title, _ in TABLE_COLUMNS]
    lines = ["| policy | " + " | ".join(titles) + " |", "|---" * (len(titles) + 1) + "|"]
    for name, row in rows.items():
        cells = ["—" if row[title] is None else f"{row[title]:.3f}" for title in titles]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", type=Path, default=REPO_ROOT / "outputs/demo", help="everything is written here")
    parser.add_argument("--fresh", action="store_true", help="delete --out_dir first (otherwise stages resume)")
    parser.add_argument("--sft-epochs", type=float, default=24.0, help="LLaMA-Factory epochs over the trajectories")
    parser.add_argument("--sft-lr", type=float, default=2.0e-3, help="SFT learning rate (the tiny policy's)")
    parser.add_argument(
        "--sft-batch-size",
        type=int,
        default=4,
        help="trajectories per SFT step; at 1, the policy learnt the boxes less reliably (format 0.89-0.98 on the "
        "training samples, by machine) and more slowly",
    )
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the GRPO trainer")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    out = args.out_dir.resolve()
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    commands = Commands(out / "commands.sh")
    python = sys.executable

    from unidoc_rl.standins.scripted_llm_server import ScriptedLLMServer, exact_match_judge
    from unidoc_rl.standins.scripted_teacher import ScriptedTeacher
    from unidoc_rl.standins.tiny_models import DEMO_POLICY, tiny_policy_path

    tiny = str(tiny_policy_path(spec=DEMO_POLICY))
    logger.info("1/6 render and index %s; serve search", REPO_ROOT / "examples/corpus")
    commands.run(
        [python, "search_engine/ingestion.py", "--dataset_dir", str(REPO_ROOT / "examples/corpus"),
         "--index_dir", str(out / "index"), "--pages_dir", str(out / "pages"), "--backend", "bm25"]
    )  # fmt: skip
    train_samples = json.loads(TRAIN_SAMPLES.read_text())
    with ExitStack() as services:
        search_url = services.enter_context(search_service(out / "index", out / "pages", out / "search_service.log"))
        teacher = services.enter_context(ScriptedTeacher(train_samples))
        judge = services.enter_context(ScriptedLLMServer(exact_match_judge()))
        commands.service(search_service_command(out / "index", out / "pages", int(search_url.rsplit(":", 1)[1])))
        commands.service(
            [python, "-m", "unidoc_rl.standins.scripted_teacher", "--samples", str(TRAIN_SAMPLES), "--port",
             str(teacher.server.port)]
        )  # fmt: skip
        commands.service([python, "-m", "unidoc_rl.standins.scripted_llm_server", "--port", str(judge.port)])

        logger.info("2/6 teacher trajectories, LLaMA-Factory export, SFT of the tiny policy")
        sft_dir = out / "sft"
        teacher_out = sft_dir / "teacher.jsonl"
        commands.run(
            [python, "synthetic_data/generate_cot_data.py", "--data-path", str(TRAIN_SAMPLES),
             "--output-path", str(teacher_out), "--search-engine-url", f"{search_url}/search",
             "--llm-engine-url", teacher.base_url, "--vllm-engine-url", teacher.base_url,
             "--enable-rerank", "--enable-crop", "--pdf-dir", str(REPO_ROOT / "examples/corpus"),
             "--agent-config", str(AGENT_CONFIG), "--max-searches", "1", "--backoff", "0.05"]
        )  # fmt: skip
        data_dir = sft_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "LLaMA-Factory/data/dataset_info.json", data_dir)
        commands.run(
            [python, "synthetic_data/convert_to_llamafactory.py", "--input-path", str(teacher_out),
             "--output-path", str(data_dir / "unidoc_sft.json")]
        )  # fmt: skip
        sft_checkpoint = sft_dir / "checkpoint"
        if not (sft_checkpoint / "model.safetensors").exists():
            offline = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "MPLCONFIGDIR": str(sft_dir / "mpl"), "PYTHONPATH": ""}  # fmt: skip
            commands.run(
                [sft_python(), "LLaMA-Factory/launch.py", "train", SFT_CONFIG, f"model_name_or_path={tiny}",
                 f"dataset_dir={data_dir}", f"output_dir={sft_checkpoint}", f"num_train_epochs={args.sft_epochs}",
                 f"learning_rate={args.sft_lr}", f"per_device_train_batch_size={args.sft_batch_size}"],
                env=offline,
                log=sft_dir / "llamafactory.log",
            )  # fmt: skip

        def evaluate(name: str, model: str, samples: Path) -> Path:
            run_dir = out / "eval" / name
            commands.run(
                [python, "-m", "unidoc_rl.eval", "--samples", str(samples), "--search-url", search_url,
                 "--index_dir", str(out / "index"), "--judge-url", judge.base_url, "--model-path", model,
                 "--experiment", EXPERIMENT, "--out_dir", str(run_dir)]
            )  # fmt: skip
            return run_dir

        logger.info("3/6 evaluate the SFT checkpoint")
        runs = {"after SFT": evaluate("sft", str(sft_checkpoint), HELDOUT_SAMPLES)}
        sft_on_train = evaluate("sft_train", str(sft_checkpoint), TRAIN_SAMPLES)

        logger.info("4/6 GRPO from the SFT checkpoint (%d steps)", args.steps)
        commands.run(
            [python, "-m", "unidoc_rl.data.prepare", "--samples", str(TRAIN_SAMPLES), "--out_dir", str(out / "data"),
             "--index_dir", str(out / "index"), "--val_size", "4"]
        )  # fmt: skip
        grpo_dir = out / "grpo"
        grpo_checkpoint = grpo_dir / "checkpoints" / f"global_step_{args.steps}" / "actor" / "huggingface"
        (grpo_dir / "logs").mkdir(parents=True, exist_ok=True)
        # verl's file logger starts its file afresh: a finished run is not rerun.
        if not (grpo_checkpoint / "model.safetensors").exists():
            commands.run(
                ["bash", "scripts/train.sh", f"trainer.default_local_dir={grpo_dir / 'checkpoints'}",
                 f"trainer.rollout_data_dir={grpo_dir / 'rollouts'}",
                 f"unidoc_trainer.trajectory_log={grpo_dir / 'logs/trajectories.jsonl'}",
                 f"trainer.total_training_steps={args.steps}", f"trainer.save_freq={args.steps}", *args.overrides],
                env={"VERL_PLATFORM": "cpu", "EXPERIMENT": EXPERIMENT, "MODEL_PATH": str(sft_checkpoint),
                     "TRAIN_FILE": str(out / "data/train.parquet"), "VAL_FILE": str(out / "data/val.parquet"),
                     "SEARCH_URL": search_url, "JUDGE_URL": judge.base_url, "PYTHON": python,
                     "VERL_FILE_LOGGER_PATH": str(grpo_dir / "logs/metrics.jsonl"), "RAY_DEDUP_LOGS": "0"},
                log=grpo_dir / "train.log",
                progress=VERL_PROGRESS,
            )  # fmt: skip
        commands.run(
            [
                python,
                "-m",
                "unidoc_rl.training.hf_checkpoint",
                str(grpo_checkpoint),
                "--base-model",
                str(sft_checkpoint),
            ]
        )

        logger.info("5/6 evaluate the untrained policy and the GRPO checkpoint; build the viewer")
        runs = {"untrained": evaluate("untrained", tiny, HELDOUT_SAMPLES), **runs}
        runs["after GRPO"] = evaluate("grpo", str(grpo_checkpoint), HELDOUT_SAMPLES)
    sites = {}
    for name, run_dir in {
        "eval_sft": runs["after SFT"],
        "eval_grpo": runs["after GRPO"],
        "grpo": grpo_dir / "logs",
    }.items():
        sites[name] = out / "viewer" / name
        commands.run(
            [python, "-m", "unidoc_rl.viewer", str(run_dir), "--index-dir", str(out / "pages"), "--samples",
             str(REPO_ROOT / "examples/samples.json"), "--out", str(sites[name])]
        )  # fmt: skip

    rows = {name: table_row(overall(run_dir)) for name, run_dir in runs.items()}
    summary = {
        "held_out": rows,
        "sft_on_training_samples": table_row(overall(sft_on_train)),
        "grpo_steps": _grpo_steps(grpo_dir / "logs" / "metrics.jsonl"),
        "paths": {
            "sft_checkpoint": str(sft_checkpoint),
            "grpo_checkpoint": str(grpo_checkpoint),
            "teacher_trajectories": str(teacher_out),
            "training_logs": str(grpo_dir / "logs"),
            "evaluations": {name: str(run_dir) for name, run_dir in runs.items()},
            "viewer": {name: str(site / "index.html") for name, site in sites.items()},
            "commands": str(commands.path),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print("\nHeld-out samples (the evaluation harness's summary.json, overall):\n")
    print(format_table(rows))
    print("\nAfter SFT, on the training samples:\n")
    print(format_table({"after SFT": summary["sft_on_training_samples"]}))
    print("\n" + json.dumps(summary["paths"], indent=1))
    print(f"\ndone in {summary['seconds']:.0f} s; summary: {out / 'summary.json'}")
    return summary


def console_main() -> None:
    """`unidoc-demo`: `main` for a console script, which exits with what its function returns (here: status 0)."""
    main()


def _grpo_steps(metrics_path: Path) -> list[dict]:
    """Per GRPO step: mean reward, within-group reward spread, loss and gradient norm (verl's file-logger lines)."""
    from unidoc_rl.common.jsonl import read_jsonl

    steps = []
    for line in read_jsonl(metrics_path):
        data = line.get("data") or {}
        if "critic/score/mean" in data:
            steps.append({"step": line["step"], **{name: data.get(key) for name, key in GRPO_STEP_METRICS.items()}})
    return steps


if __name__ == "__main__":
    main()
