"""The project's Hydra config: `configs/unidoc_grpo.yaml` (composed on verl's `ppo_trainer`) with an optional
overlay from `configs/experiment/` and Hydra overrides, composed in-process as `scripts/train.sh` composes it for
verl's `main_ppo`. The evaluation harness and the tests read the episode rules, rollout lengths and reward settings
from it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
TINY_POLICY = "tiny"
"""`actor_rollout_ref.model.path` / `--model-path` value naming the offline tiny policy (built once into .cache/)."""


def compose_config(overrides: list[str] | None = None, experiment: str | None = None) -> DictConfig:
    """`unidoc_grpo` with `+experiment=<experiment>` when given, then the caller's Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    extra = [f"+experiment={experiment}"] if experiment else []
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="unidoc_grpo", overrides=[*extra, *(overrides or [])])
