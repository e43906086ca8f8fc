"""Single-process GRPO trainer (CPU or one GPU): the embedded default, the debugging path and what CI exercises.

    python -m unidoc_rl.trainer.local [hydra overrides ...]
    python -m unidoc_rl.trainer.local actor_rollout_ref.model.path=saves/unidoc-sft local_trainer.device=cuda

It runs the same parts as the verl path: rollouts go through verl's `AgentLoopWorker` with the project's agent
loop, generation through the local transformers engine behind verl's LLM-server seam, rewards through the
project's reward-loop manager, and advantages, policy loss, KL and loss aggregation through
`verl.trainer.ppo.core_algos`. The config is `configs/unidoc_grpo.yaml` (composed on verl's `ppo_trainer`) with
the overlay `configs/experiment/local_cpu.yaml`; the `local_trainer` section holds what only this trainer reads.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from verl.protocol import DataProto

from unidoc_rl.episode import EpisodeRecord
from unidoc_rl.jsonl import JsonlLog
from unidoc_rl.rewards.groups import within_group_std
from unidoc_rl.settings_keys import reject_unknown_keys
from unidoc_rl.step_metrics import agent_metrics, reward_component_metrics
from unidoc_rl.trainer.checkpoint import (
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    python_rng_state,
    save_checkpoint,
)
from unidoc_rl.trainer.grpo import grpo_advantages, policy_inputs, policy_objective, response_log_probs

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TINY_POLICY = "tiny"

RewardFunction = Callable[[DataProto], Awaitable[list[tuple[float, dict[str, float]]]]]
"""Scores a rolled-out batch: one (reward, components) pair per row."""


@dataclass(frozen=True)
class LocalTrainerSettings:
    device: str = "cpu"
    dtype: str = "float32"
    micro_batch_size: int = 8
    total_steps: int = 4
    save_freq: int = 0
    val_freq: int = 0
    val_before_train: bool = False
    checkpoint_dir: str = "outputs/local/checkpoints"
    log_dir: str = "outputs/local"
    resume: str = "auto"
    seed: int = 0
    engine_max_batch_size: int = 16
    wandb: str = "disabled"
    wandb_project: str = "unidoc_rl"

    @classmethod
    def from_config(cls, section: Any) -> LocalTrainerSettings:
        values = dict(section or {})
        reject_unknown_keys(values, (item.name for item in fields(cls)), "local_trainer")
        return cls(**values)


def compose_config(overrides: list[str] | None = None, experiment: str = "local_cpu") -> DictConfig:
    """`unidoc_grpo` with an experiment overlay from configs/experiment/, then the caller's Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="unidoc_grpo", overrides=[f"+experiment={experiment}", *(overrides or [])])


class DenseReward:
    """The project's verl reward-loop manager, called per trajectory, concurrently."""

    def __init__(self, config: DictConfig, tokenizer):
        from unidoc_rl.rewards.verl_manager import UniDocRewardManager

        self.manager = UniDocRewardManager(config, tokenizer)

    async def __call__(self, batch: DataProto) -> list[tuple[float, dict[str, float]]]:
        results = await asyncio.gather(*(self.manager.run_single(batch[i : i + 1]) for i in range(len(batch))))
        return [(float(r["reward_score"]), dict(r["reward_extra_info"])) for r in results]


class PromptStream:
    """Prompts in a seeded shuffled order per epoch; (epoch, position) is the resumable data position."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0
        self.position = 0

    def _order(self) -> list[int]:
        order = list(range(len(self.dataset)))
        random.Random(self.seed + self.epoch).shuffle(order)
        return order

    def next_batch(self, size: int) -> list[dict]:
        items = []
        order = self._order()
        while len(items) < size:
            if self.position >= len(order):
                self.epoch += 1
                self.position = 0
                order = self._order()
            items.append(self.dataset[order[self.position]])
            self.position += 1
        return items


def _to_batch(items: list[dict]) -> DataProto:
    from verl.utils.dataset.rl_dataset import collate_fn

    return DataProto.from_single_dict(collate_fn(items))


def _ground_truth(output: DataProto, row: int) -> dict | None:
    """The row's ground truth (reference answer, gold pages and boxes), for the trajectory log and the viewer."""
    reward_model = output.non_tensor_batch.get("reward_model")
    return None if reward_model is None else reward_model[row].get("ground_truth")


class LocalTrainer:
    def __init__(self, config: DictConfig, reward_fn: RewardFunction | None = None):
        from transformers import Qwen2_5_VLForConditionalGeneration
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.dataset.rl_dataset import RLHFDataset

        from unidoc_rl.agent.verl_worker import build_agent_loop_worker, rope_processor
        from unidoc_rl.engine.local_engine import LocalEngine

        self.config = config
        self.settings = LocalTrainerSettings.from_config(config.get("local_trainer"))
        self._seed_everything(self.settings.seed)
        model_path = str(config.actor_rollout_ref.model.path)
        if model_path == TINY_POLICY:
            from unidoc_rl.testing.tiny_models import tiny_policy_path

            model_path = str(tiny_policy_path())
            OmegaConf.update(config, "actor_rollout_ref.model.path", model_path)
        self.device = torch.device(self.settings.device)
        dtype = getattr(torch, self.settings.dtype)
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            model_path, dtype=dtype, attn_implementation="sdpa"
        ).to(self.device)
        self.model.eval()
        if config.actor_rollout_ref.model.get("enable_gradient_checkpointing") and self.device.type == "cuda":
            self.model.gradient_checkpointing_enable()
        self.processor = rope_processor(model_path)
        self.tokenizer = self.processor.tokenizer

        self.actor_config = omega_conf_to_dataclass(config.actor_rollout_ref.actor)
        self.ref_model = None
        if self.actor_config.use_kl_loss:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)

        rollout = config.actor_rollout_ref.rollout
        self.temperature = float(rollout.temperature)
        self.group_size = int(rollout.n)
        self.engine = LocalEngine(
            self.model,
            self.processor,
            max_model_len=int(rollout.prompt_length) + int(rollout.response_length),
            max_batch_size=self.settings.engine_max_batch_size,
        )
        self.worker = build_agent_loop_worker(config, self.engine, self.processor)
        self.reward_fn = reward_fn or DenseReward(config, self.tokenizer)

        data_config = config.data

        def dataset(files) -> RLHFDataset:
            files = [files] if isinstance(files, str) else list(files)
            return RLHFDataset(data_files=files, tokenizer=self.tokenizer, config=data_config, processor=self.processor)

        self.train_data = PromptStream(dataset(data_config.train_files), seed=self.settings.seed)
        self.val_dataset = dataset(data_config.val_files) if data_config.get("val_files") else None
        self.prompts_per_step = int(data_config.train_batch_size)

        optim = self.actor_config.optim
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=optim.lr,
            betas=tuple(optim.betas),
            weight_decay=optim.weight_decay,
        )
        warmup_steps = int(optim.lr_warmup_steps_ratio * self.settings.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        )
        self.global_step = 0
        self.loop = asyncio.new_event_loop()
        log_dir = Path(self.settings.log_dir)
        self.metrics_log = JsonlLog(log_dir / "metrics.jsonl")
        self.trajectory_log = JsonlLog(log_dir / "trajectories.jsonl")
        self.wandb_run = self._start_wandb()

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _start_wandb(self):
        if self.settings.wandb == "disabled":
            return None
        import wandb

        return wandb.init(
            project=self.settings.wandb_project,
            mode=self.settings.wandb,
            dir=self.settings.log_dir,
            config=OmegaConf.to_container(self.config, resolve=True),
        )

    # --- rollout and reward ------------------------------------------------------------------------------------

    def _rollout(self, items: list[dict], validate: bool, step: int) -> tuple[DataProto, np.ndarray]:
        batch = _to_batch(items)
        groups = np.array([f"{step}-{i}" for i in range(len(batch))], dtype=object)
        repeat = 1 if validate else self.group_size
        batch = batch.repeat(repeat_times=repeat, interleave=True)
        groups = np.repeat(groups, repeat)
        batch.meta_info.update({"validate": validate, "global_steps": step})
        self.engine.reseed(self.settings.seed * 1_000_003 + step * 2 + int(validate))
        output = self.loop.run_until_complete(self.worker.generate_sequences(batch))
        return output, groups

    def _score(self, output: DataProto) -> tuple[torch.Tensor, list[dict[str, float]]]:
        results = self.loop.run_until_complete(self.reward_fn(output))
        return torch.tensor([score for score, _ in results]), [components for _, components in results]

    # --- update --------------------------------------------------------------------------------------------------

    def _update(self, output: DataProto, advantages: torch.Tensor) -> dict[str, float]:
        size = len(output)
        mask = output.batch["response_mask"]
        total_tokens = int(mask.sum())
        micro = max(1, self.settings.micro_batch_size)
        chunks = [list(range(start, min(start + micro, size))) for start in range(0, size, micro)]
        with_entropy = self.actor_config.entropy_coeff != 0

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        totals = {"loss": 0.0, "pg_loss": 0.0, "kl_loss": 0.0, "entropy": 0.0, "pg_clipfrac": 0.0, "ppo_kl": 0.0}
        for rows in chunks:
            inputs = policy_inputs(output, rows, self.device)
            log_prob, entropy = response_log_probs(self.model, inputs, self.temperature, with_entropy)
            width = log_prob.shape[1]
            chunk_mask = mask[rows][:, :width].to(self.device)
            ref_log_prob = None
            if self.ref_model is not None:
                with torch.no_grad():
                    ref_log_prob, _ = response_log_probs(self.ref_model, inputs, self.temperature)
            # One PPO epoch over one mini-batch: the rollout policy is the current one, so the old log-probs are
            # the current ones, detached (the ratio is 1 and the clipped objective is its on-policy gradient).
            terms = policy_objective(
                log_prob=log_prob,
                old_log_prob=log_prob.detach(),
                ref_log_prob=ref_log_prob,
                advantages=advantages[rows][:, :width].to(self.device),
                response_mask=chunk_mask,
                actor_config=self.actor_config,
                batch_num_tokens=max(total_tokens, 1),
                global_batch_size=size,
                entropy=entropy,
            )
            terms.loss.backward()
            share = len(rows) / size
            totals["loss"] += float(terms.loss.detach())
            totals["pg_loss"] += terms.pg_loss
            totals["kl_loss"] += terms.kl_loss
            totals["entropy"] += terms.entropy
            totals["pg_clipfrac"] += terms.pg_clipfrac * share
            totals["ppo_kl"] += terms.ppo_kl * share
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.actor_config.grad_clip)
        if math.isfinite(float(grad_norm)):
            self.optimizer.step()
        else:
            logger.warning("step %d: non-finite gradient norm, update skipped", self.global_step)
        self.scheduler.step()
        self.model.eval()
        return {
            **{f"actor/{name}": value for name, value in totals.items()},
            "actor/grad_norm": float(grad_norm),
            "actor/lr": self.scheduler.get_last_lr()[0],
        }

    # --- metrics -------------------------------------------------------------------------------------------------

    def _episode_metrics(self, output: DataProto, scores: torch.Tensor, components: list[dict], prefix: str):
        episodes = [EpisodeRecord.from_dict(e) for e in output.non_tensor_batch["episode"]]
        metrics = {
            f"{prefix}/reward": float(scores.mean()),
            f"{prefix}/response_tokens": float(output.batch["response_mask"].sum(-1).float().mean()),
            **reward_component_metrics(components, prefix),
            **agent_metrics(episodes, prefix),
        }
        return metrics, episodes

    def _log(self, metrics: dict) -> None:
        self.metrics_log.write({"step": self.global_step, **metrics})
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=self.global_step)
        shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
        logger.info("step %d %s", self.global_step, shown)

    # --- loop ----------------------------------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        started = time.perf_counter()
        step = self.global_step + 1
        items = self.train_data.next_batch(self.prompts_per_step)
        output, groups = self._rollout(items, validate=False, step=step)
        rollout_s = time.perf_counter() - started
        scores, components = self._score(output)
        response_attention = output.batch["attention_mask"][:, output.batch["prompts"].shape[1] :]
        advantages = grpo_advantages(
            scores,
            response_attention,
            output.batch["response_mask"],
            groups,
            norm_by_std=bool(self.config.algorithm.get("norm_adv_by_std_in_grpo", True)),
        )
        update_started = time.perf_counter()
        metrics = self._update(output, advantages)
        self.global_step = step
        episode_metrics, episodes = self._episode_metrics(output, scores, components, "train")
        metrics.update(episode_metrics)
        metrics["train/reward/std_within_groups"] = within_group_std(scores.tolist(), list(groups))
        metrics.update(
            {
                "timing/rollout_s": rollout_s,
                "timing/update_s": time.perf_counter() - update_started,
                "timing/step_s": time.perf_counter() - started,
            }
        )
        self.trajectory_log.write_many(
            [
                {
                    "step": step,
                    "group": groups[row],
                    "reward": float(scores[row]),
                    "components": components[row],
                    "ground_truth": _ground_truth(output, row),
                    "episode": episode.to_dict(),
                }
                for row, episode in enumerate(episodes)
            ]
        )
        self._log(metrics)
        return metrics

    def validate(self) -> dict[str, float]:
        if self.val_dataset is None:
            return {}
        items = [self.val_dataset[i] for i in range(len(self.val_dataset))]
        output, _ = self._rollout(items, validate=True, step=self.global_step)
        scores, components = self._score(output)
        metrics, _ = self._episode_metrics(output, scores, components, "val")
        self._log(metrics)
        return metrics

    def save(self) -> Path:
        state = TrainerState(
            global_step=self.global_step,
            epoch=self.train_data.epoch,
            position=self.train_data.position,
            python_rng=python_rng_state(),
        )
        return save_checkpoint(
            Path(self.settings.checkpoint_dir), self.model, self.processor, self.optimizer, self.scheduler, state
        )

    def resume(self) -> bool:
        if self.settings.resume == "none":
            return False
        root = Path(self.settings.checkpoint_dir)
        path = latest_checkpoint(root) if self.settings.resume == "auto" else Path(self.settings.resume)
        if path is None:
            return False
        state = load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        self.global_step = state.global_step
        self.train_data.epoch, self.train_data.position = state.epoch, state.position
        self.metrics_log.truncate_after_step(state.global_step)
        self.trajectory_log.truncate_after_step(state.global_step)
        logger.info("resumed from %s at step %d", path, state.global_step)
        return True

    def fit(self) -> list[dict[str, float]]:
        self.resume()
        history = []
        if self.settings.val_before_train and self.global_step == 0:
            self.validate()
        while self.global_step < self.settings.total_steps:
            history.append(self.train_step())
            step = self.global_step
            if self.settings.val_freq and step % self.settings.val_freq == 0:
                self.validate()
            if self.settings.save_freq and step % self.settings.save_freq == 0:
                self.save()
        return history

    def close(self) -> None:
        self.metrics_log.close()
        self.trajectory_log.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
        self.loop.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Single-process GRPO training of a UniDoc agent (CPU or one GPU) on verl's agent loop, "
        "reward manager and loss functions.",
        epilog="Overrides use Hydra syntax, e.g. local_trainer.total_steps=10 actor_rollout_ref.model.path=PATH. "
        "The defaults are configs/unidoc_grpo.yaml with the overlay configs/experiment/<experiment>.yaml.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides")
    parser.add_argument("--experiment", default="local_cpu", help="overlay in configs/experiment/ (default: local_cpu)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trainer = LocalTrainer(compose_config(args.overrides, args.experiment))
    try:
        trainer.fit()
        trainer.save()
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
