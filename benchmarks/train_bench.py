"""Seconds per GRPO step: the local trainer against trl's GRPOTrainer on the same tiny Qwen2.5-VL, on CPU.

Both trainers get the same workload: the same chat prompts (the RL parquet built from examples/samples.json),
`--prompts` prompts per optimizer step, `--group` completions per prompt, at most `--max_tokens` completion tokens,
temperature 1.0, the same toy reward (the share of completion tokens that contain a digit), AdamW with the same
learning rate, weight decay and gradient clipping, one PPO iteration, fp32 weights, no KL term (or, with `--kl`,
a low-variance KL term with the same coefficient for both). Ours runs single-turn episodes through verl's agent
loop (`max_turns=1`, no forced answer) with the in-process search backend; trl generates with `model.generate`.

Each trainer runs in its own fresh process (no shared caches or thread pools); the driver steps them alternately,
one step at a time, so that load from other programs on the machine falls on both alike. `--warmup` steps are
discarded and the median of `--steps` timed steps is reported. Ours is timed around `LocalTrainer.train_step()`;
trl from `on_step_begin` to `on_step_end` of a TrainerCallback (generation, reward, forward/backward, optimizer
step). Prints one JSON object; ratio = trl_s_per_step / ours_s_per_step (target: >= 1.0).

Wall times on a shared machine depend on what else runs there: the JSON carries the load average, CPU seconds
per step and every step's time. `--threads 1` gives both trainers one torch thread, which makes the comparison
far less sensitive to other programs competing for the cores.

    python benchmarks/train_bench.py --steps 8 --group 8 --max_tokens 32 [--kl] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.0
KL_COEF = 0.01

logger = logging.getLogger("train_bench")


@dataclass(frozen=True)
class BenchConfig:
    prompts: int
    group: int
    max_tokens: int
    warmup: int
    steps: int
    lr: float
    weight_decay: float
    kl: bool
    seed: int
    threads: int

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


def _child_setup(log_level: str, threads: int) -> None:
    """Runs first in each trainer's process: offline hub, logging, torch threads, stdout free for the JSON."""
    os.dup2(2, 1)
    logging.basicConfig(level=log_level)
    _offline_environment()
    if threads:
        import torch

        torch.set_num_threads(threads)


def _offline_environment() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")


def write_train_parquet(out_dir: Path) -> Path:
    from unidoc_rl.data.prepare import prepare, write_parquet

    samples = json.loads((REPO_ROOT / "examples/samples.json").read_text())
    split = prepare(samples, "sample", val_size=2, seed=0)
    path = out_dir / "train.parquet"
    write_parquet(split.train, path)
    return path


def digit_token_ids(tokenizer) -> frozenset[int]:
    return frozenset(i for token, i in tokenizer.get_vocab().items() if any(ch.isdigit() for ch in token))


def digit_share(token_ids: list[int], digit_ids: frozenset[int]) -> float:
    """The toy reward: the share of completion tokens that contain a digit."""
    return sum(token in digit_ids for token in token_ids) / max(len(token_ids), 1)


# --- ours --------------------------------------------------------------------------------------------------------


def run_ours(conn, config: BenchConfig, parquet: Path, work_dir: Path, log_level: str) -> None:
    """Builds the local trainer, then runs one step per `step` message and sends back each step's record."""
    _child_setup(log_level, config.threads)
    from unidoc_rl.agent.search import StaticSearchBackend, register_inprocess_backend
    from unidoc_rl.trainer.local import LocalTrainer, compose_config

    search_url = register_inprocess_backend("train-bench", StaticSearchBackend({}, {}))
    kl_overrides = (
        [
            "actor_rollout_ref.actor.use_kl_loss=true",
            f"actor_rollout_ref.actor.kl_loss_coef={KL_COEF}",
            "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        ]
        if config.kl
        else ["actor_rollout_ref.actor.use_kl_loss=false"]
    )
    trainer_config = compose_config(
        [
            f"data.train_files={parquet}",
            "data.val_files=null",
            f"data.train_batch_size={config.prompts}",
            # verl pads every response to this length; one more than the turn budget leaves room for the
            # `<|im_end|>` the agent loop appends, so a turn may still use all `max_tokens` tokens.
            f"data.max_response_length={config.max_tokens + 1}",
            f"unidoc_agent.search_url={search_url}",
            "unidoc_agent.max_turns=1",
            "unidoc_agent.force_final_answer=false",
            f"unidoc_agent.max_tokens_per_turn={config.max_tokens}",
            f"actor_rollout_ref.rollout.n={config.group}",
            "actor_rollout_ref.rollout.temperature=1.0",
            f"actor_rollout_ref.actor.optim.lr={config.lr}",
            f"actor_rollout_ref.actor.optim.weight_decay={config.weight_decay}",
            "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.0",
            "actor_rollout_ref.actor.ppo_epochs=1",
            *kl_overrides,
            f"local_trainer.total_steps={config.total_steps}",
            f"local_trainer.micro_batch_size={config.group}",
            f"local_trainer.engine_max_batch_size={config.prompts * config.group}",
            f"local_trainer.seed={config.seed}",
            "local_trainer.save_freq=0",
            "local_trainer.resume=none",
            f"local_trainer.log_dir={work_dir / 'logs'}",
            f"local_trainer.checkpoint_dir={work_dir / 'checkpoints'}",
        ]
    )
    trainer = LocalTrainer(trainer_config)
    digit_ids = digit_token_ids(trainer.tokenizer)

    async def reward(batch):
        results = []
        for row in range(len(batch)):
            mask = batch.batch["response_mask"][row].bool()
            share = digit_share(batch.batch["responses"][row][mask].tolist(), digit_ids)
            results.append((share, {"digit_share": share}))
        return results

    trainer.reward_fn = reward
    conn.send("ready")
    try:
        for step in range(1, config.total_steps + 1):
            conn.recv()
            batches_before = len(trainer.engine.batches_run)
            cpu_started = time.process_time()
            started = time.perf_counter()
            metrics = trainer.train_step()
            record = {
                "step_s": time.perf_counter() - started,
                "cpu_s": time.process_time() - cpu_started,
                "engine_batches": trainer.engine.batches_run[batches_before:],
                "rollout_s": metrics["timing/rollout_s"],
                "update_s": metrics["timing/update_s"],
                "completion_tokens": metrics["train/response_tokens"],
                "reward": metrics["train/reward"],
            }
            logger.info("ours step %d: %.3f s", step, record["step_s"])
            conn.send(record)
    finally:
        trainer.close()


# --- trl ---------------------------------------------------------------------------------------------------------


def run_trl(conn, config: BenchConfig, parquet: Path, work_dir: Path, log_level: str) -> None:
    """Builds trl's GRPOTrainer; each optimizer step waits for a `step` message and reports its wall time."""
    _child_setup(log_level, config.threads)
    import pyarrow.parquet as pq
    import torch
    from datasets import Dataset
    from transformers import Qwen2_5_VLForConditionalGeneration, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from unidoc_rl.compat import load_policy_processor
    from unidoc_rl.testing.tiny_models import tiny_policy_path

    model_path = str(tiny_policy_path())
    processor = load_policy_processor(model_path)
    digit_ids = digit_token_ids(processor.tokenizer)
    prompts = [[dict(message) for message in row] for row in pq.read_table(parquet, columns=["prompt"])["prompt"]]
    dataset = Dataset.from_dict({"prompt": prompts})

    def reward(completion_ids, **_):
        return [digit_share(list(ids), digit_ids) for ids in completion_ids]

    class LockstepTimer(TrainerCallback):
        """Holds each step until the driver says go, then times it from on_step_begin to on_step_end."""

        def __init__(self):
            self.started = 0.0
            self.cpu_started = 0.0
            self.rollouts_before = 0

        def on_train_begin(self, args, state, control, **kwargs):
            conn.send("ready")

        def on_step_begin(self, args, state, control, **kwargs):
            conn.recv()
            self.rollouts_before = len(rollout_durations)
            self.cpu_started = time.process_time()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_s = time.perf_counter() - self.started
            cpu_s = time.process_time() - self.cpu_started
            logger.info("trl step %d: %.3f s", state.global_step, step_s)
            conn.send({"step_s": step_s, "cpu_s": cpu_s, "rollout_s": sum(rollout_durations[self.rollouts_before :])})

    class TimedGRPOTrainer(GRPOTrainer):
        """Records how long generation plus scoring (trl's rollout phase) takes per call."""

        def _generate_and_score_completions(self, inputs):
            started = time.perf_counter()
            output = super()._generate_and_score_completions(inputs)
            rollout_durations.append(time.perf_counter() - started)
            return output

    rollout_durations: list[float] = []

    completions = config.prompts * config.group
    args = GRPOConfig(
        output_dir=str(work_dir / "trl"),
        use_cpu=True,
        bf16=False,
        fp16=False,
        use_vllm=False,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=config.seed,
        max_steps=config.total_steps,
        # One optimizer step = `prompts` × `group` completions, generated together, in micro-batches of `group`
        # (the local trainer's micro-batch size here).
        per_device_train_batch_size=config.group,
        gradient_accumulation_steps=config.prompts,
        generation_batch_size=completions,
        num_generations=config.group,
        num_iterations=1,
        max_completion_length=config.max_tokens,
        temperature=1.0,
        top_p=1.0,
        learning_rate=config.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=config.weight_decay,
        max_grad_norm=1.0,
        optim="adamw_torch",
        beta=KL_COEF if config.kl else 0.0,
        loss_type="dapo",
        scale_rewards="group",
        # The local trainer checkpoints activations only on GPU; trl defaults to checkpointing everywhere.
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        log_completions=False,
    )
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        model_path, dtype=torch.float32, attn_implementation="sdpa"
    )
    trainer = TimedGRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[LockstepTimer()],
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "completions/mean_length" in entry]
    conn.send([{"completion_tokens": entry["completions/mean_length"], "reward": entry["reward"]} for entry in logs])


# --- driver ------------------------------------------------------------------------------------------------------


class TrainerProcess:
    """One trainer in its own fresh process, driven one step at a time over a pipe."""

    def __init__(self, name: str, target, *args):
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(target=target, args=(child_conn, *args), name=name, daemon=True)
        self.process.start()
        child_conn.close()  # a dead child then shows up as EOF here instead of a hang

    def receive(self):
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join()
            raise RuntimeError(f"the {self.name} process exited (code {self.process.exitcode}); see stderr") from None

    def step(self) -> dict:
        self.conn.send("step")
        return self.receive()

    def close(self) -> None:
        self.process.join(timeout=60)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def run_lockstep(config: BenchConfig, parquet: Path, work_dir: Path, log_level: str) -> tuple[dict, dict]:
    """Alternates single steps of the two trainers (who goes first alternates too), so background load on the
    machine falls on both alike; both are built before the first step and only one runs at a time."""
    ours = TrainerProcess("local trainer", run_ours, config, parquet, work_dir / "ours", log_level)
    trl = TrainerProcess("trl", run_trl, config, parquet, work_dir / "trl", log_level)
    ours_steps, trl_steps = [], []
    try:
        for trainer in (ours, trl):
            trainer.receive()  # built: no timed step overlaps the other trainer's start-up
        for step in tqdm(range(config.total_steps), desc="steps (both trainers)", file=sys.stderr):
            pair = [(ours, ours_steps), (trl, trl_steps)]
            for trainer, records in pair if step % 2 == 0 else reversed(pair):
                records.append(trainer.step())
        for record, extra in zip(trl_steps, trl.receive(), strict=True):
            record.update(extra)
    finally:
        ours.close()
        trl.close()
    return {"steps": ours_steps}, {"steps": trl_steps}


def _per_step(steps: list[dict]) -> list[list[float]]:
    """[step_s, rollout_s, mean completion tokens] for every step, warm-up included."""
    return [
        [round(step["step_s"], 3), round(step["rollout_s"], 3), round(step["completion_tokens"], 2)] for step in steps
    ]


def _median(steps: list[dict], key: str) -> float:
    return round(statistics.median(step[key] for step in steps), 4)


def summarize(config: BenchConfig, ours: dict, trl: dict, load_average: dict) -> dict:
    ours_steps = ours["steps"][config.warmup :]
    trl_steps = trl["steps"][config.warmup :]
    ours_s = _median(ours_steps, "step_s")
    trl_s = _median(trl_steps, "step_s")
    ratio = round(trl_s / ours_s, 3)
    return {
        "benchmark": "grpo_step_time_vs_trl",
        "config": {
            **asdict(config),
            "completions_per_step": config.prompts * config.group,
            "temperature": 1.0,
            "dtype": "float32",
            "device": "cpu",
            "torch_threads": config.threads or _torch_threads(),
            "model": "tiny Qwen2.5-VL (unidoc_rl.testing.tiny_models)",
        },
        "ours_s_per_step": ours_s,
        "trl_s_per_step": trl_s,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "ours_cpu_s_per_step": _median(ours_steps, "cpu_s"),
        "trl_cpu_s_per_step": _median(trl_steps, "cpu_s"),
        "cpu_ratio": round(_median(trl_steps, "cpu_s") / _median(ours_steps, "cpu_s"), 3),
        "ours_breakdown": {
            "rollout_s": _median(ours_steps, "rollout_s"),
            "update_s": _median(ours_steps, "update_s"),
        },
        "trl_breakdown": {
            "rollout_s": _median(trl_steps, "rollout_s"),
            "update_s": round(trl_s - _median(trl_steps, "rollout_s"), 4),
        },
        "mean_completion_tokens": {
            "ours": round(statistics.fmean(step["completion_tokens"] for step in ours_steps), 2),
            "trl": round(statistics.fmean(step["completion_tokens"] for step in trl_steps), 2),
        },
        "per_step": {"ours": _per_step(ours["steps"]), "trl": _per_step(trl["steps"])},
        "ours_engine_batches_per_step": [step["engine_batches"] for step in ours["steps"]],
        "load_average_1min": load_average,
        "mean_reward": {
            "ours": round(statistics.fmean(step["reward"] for step in ours_steps), 4),
            "trl": round(statistics.fmean(step["reward"] for step in trl_steps), 4),
        },
        "notes": [
            f"median of {config.steps} steps after {config.warmup} warm-up steps; each trainer in its own fresh "
            "process, the two stepped alternately (never at the same time) so background load hits both alike",
            "ours: LocalTrainer.train_step wall time (agent-loop rollout through verl's AgentLoopWorker and the local "
            "engine, reward, GRPO advantages, forward/backward, AdamW, metrics and trajectory log lines); rollout_s "
            "is the agent-loop rollout (prompt building, generation, verl's per-trajectory post-processing), "
            "update_s the forward/backward passes and the optimizer step",
            "trl: on_step_begin..on_step_end; trl rollout_s is _generate_and_score_completions (generation, reward, "
            "advantages), update_s the rest (forward/backward per micro-batch, clip, AdamW)",
            "ours stops a completion at an action's closing tag or EOS; trl only at EOS: compare "
            "mean_completion_tokens before reading the ratio",
            "per_step rows: [step_s, rollout_s, mean completion tokens], warm-up steps first",
            "cpu_s: process CPU time per step, all threads; it grows too when other programs take the cores "
            "(waiting torch threads spin); load_average_1min shows how busy the machine was (compare with the cores)",
            "ours_engine_batches_per_step: the sizes of the local engine's generate calls in each step; a step whose "
            "completions were split over two calls generated twice in sequence (trl always makes one call)",
        ],
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=2, help="prompts per optimizer step")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (GRPO group size)")
    parser.add_argument("--max_tokens", type=int, default=32, help="maximum completion tokens")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per trainer")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per trainer (median reported)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (constant)")
    parser.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay (verl's default)")
    parser.add_argument("--kl", action="store_true", help="add a low-variance KL loss (coef 0.01) to both trainers")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads in both trainers (0: torch's default)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log_level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level)
    for name in ("prompts", "group", "max_tokens", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.group < 2:
        parser.error("--group must be at least 2 (GRPO compares completions within a group)")
    if args.warmup < 0 or args.threads < 0:
        parser.error("--warmup and --threads must be at least 0")
    config = BenchConfig(
        prompts=args.prompts,
        group=args.group,
        max_tokens=args.max_tokens,
        warmup=args.warmup,
        steps=args.steps,
        lr=args.lr,
        weight_decay=args.weight_decay,
        kl=args.kl,
        seed=args.seed,
        threads=args.threads,
    )
    _offline_environment()
    from unidoc_rl.testing.tiny_models import tiny_policy_path

    tiny_policy_path()  # build once here, not concurrently inside the trainers
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
        work_dir = Path(tmp)
        parquet = write_train_parquet(work_dir / "data")
        load_before = os.getloadavg()[0]
        ours, trl = run_lockstep(config, parquet, work_dir, args.log_level)
        load_after = os.getloadavg()[0]
    load_average = {"start": round(load_before, 2), "end": round(load_after, 2)}
    print(json.dumps(summarize(config, ours, trl, load_average), indent=2))


if __name__ == "__main__":
    main()
