import os
import subprocess
import sys

import pytest
import yaml
from hydra.utils import get_class
from omegaconf import OmegaConf

from unidoc_rl.env.agent_settings import AgentSettings
from unidoc_rl.rewards.settings import RewardSettings

ENV = {
    "MODEL_PATH": "/ckpt/unidoc-sft",
    "TRAIN_FILE": "/data/train.parquet",
    "VAL_FILE": "/data/val.parquet",
    "SEARCH_URL": "http://10.1.2.3:8001",
    "JUDGE_URL": "http://10.1.2.4:8000/v1",
    "N_GPUS": "4",
    "NNODES": "2",
}


@pytest.fixture(scope="module")
def composed(repo_root):
    env = {**os.environ, **ENV, "DRY_RUN": "1", "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", "scripts/train.sh", "trainer.total_epochs=3", "actor_rollout_ref.rollout.n=8"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return OmegaConf.create(yaml.safe_load(result.stdout))


def test_train_sh_requires_its_environment(repo_root):
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    result = subprocess.run(["bash", "scripts/train.sh"], cwd=repo_root, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "set MODEL_PATH" in result.stderr


def test_environment_and_overrides_reach_the_config(composed, repo_root):
    assert composed.actor_rollout_ref.model.path == ENV["MODEL_PATH"]
    assert composed.data.train_files == ENV["TRAIN_FILE"] and composed.data.val_files == ENV["VAL_FILE"]
    assert composed.unidoc_agent.search_url == ENV["SEARCH_URL"]
    assert composed.reward.reward_kwargs.judge.base_url == ENV["JUDGE_URL"]
    assert composed.trainer.n_gpus_per_node == 4 and composed.trainer.nnodes == 2
    assert composed.trainer.total_epochs == 3
    assert composed.actor_rollout_ref.rollout.n == 8
    assert composed.actor_rollout_ref.rollout.agent.agent_loop_config_path == str(repo_root / "configs/agent_loop.yaml")


def test_paper_settings(composed):
    actor = composed.actor_rollout_ref.actor
    assert composed.algorithm.adv_estimator == "grpo"
    assert composed.data.train_batch_size == 16
    assert actor.optim.lr == 1e-6 and actor.optim.lr_warmup_steps_ratio == 0.285
    assert actor.clip_ratio == 0.2 and actor.ppo_epochs == 1 and actor.entropy_coeff == 0
    assert actor.use_kl_loss is True and actor.kl_loss_coef == 0.01 and actor.kl_loss_type == "low_var_kl"
    assert actor.fsdp_config.param_offload and actor.fsdp_config.optimizer_offload
    assert composed.actor_rollout_ref.model.enable_gradient_checkpointing is True
    assert composed.actor_rollout_ref.rollout.tensor_model_parallel_size == 4
    agent = AgentSettings.from_mapping(OmegaConf.to_container(composed.unidoc_agent))
    assert agent.limits.max_turns == 10 and agent.max_tokens_per_turn == 1024
    assert (agent.min_pixels, agent.max_pixels) == (256 * 28 * 28, 512 * 28 * 28)


def test_project_extensions_are_named_and_loadable(composed, repo_root):
    manager = composed.reward.reward_manager
    assert (manager.source, manager.name) == ("importlib", "UniDocRewardManager")
    assert manager.module.path == "pkg://unidoc_rl.rewards.verl_manager"
    settings = RewardSettings.from_mapping(OmegaConf.to_container(composed.reward.reward_kwargs))
    assert settings.preset == "unidoc"

    [entry] = OmegaConf.load(composed.actor_rollout_ref.rollout.agent.agent_loop_config_path)
    assert entry.name == composed.actor_rollout_ref.rollout.agent.default_agent_loop == "unidoc_agent"
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase

    assert issubclass(get_class(entry._target_), AgentLoopBase)


@pytest.mark.parametrize(
    ("use_v1", "manager_name", "worker_name"),
    [
        (None, "UniDocAgentLoopManagerTQ", "UniDocAgentLoopWorkerTQ"),
        (False, "UniDocLegacyAgentLoopManager", "UniDocAgentLoopWorker"),
    ],
)
def test_the_manager_class_builds_the_manager_of_the_configured_trainer(composed, use_v1, manager_name, worker_name):
    from verl.experimental.agent_loop.agent_loop import AgentLoopManager
    from verl.trainer.ppo.v1 import AgentLoopManagerTQ, AgentLoopWorkerTQ
    from verl.utils.import_utils import load_class_from_fqn

    from unidoc_rl.agent import verl_worker

    config = composed.copy()
    if use_v1 is not None:
        config.trainer.use_v1 = use_v1
    else:
        assert config.trainer.use_v1 is True  # verl's default trainer is the one train.sh runs
    selector = load_class_from_fqn(config.actor_rollout_ref.rollout.agent.agent_loop_manager_class)
    assert selector is verl_worker.UniDocAgentLoopManager
    manager_class = selector.manager_class(config)
    assert manager_class is getattr(verl_worker, manager_name)
    assert issubclass(manager_class, AgentLoopManagerTQ if use_v1 is None else AgentLoopManager)
    manager = manager_class(config, llm_client=None)
    worker_class = manager.agent_loop_workers_class.__ray_actor_class__
    assert worker_class is getattr(verl_worker, worker_name)
    assert issubclass(worker_class, verl_worker.ProjectWorkerMixin)
    if use_v1 is None:
        assert issubclass(worker_class, AgentLoopWorkerTQ.__ray_actor_class__)


def test_sections_validate_against_verls_config_classes(composed):
    from verl.utils.config import omega_conf_to_dataclass

    rollout = omega_conf_to_dataclass(composed.actor_rollout_ref.rollout)
    assert rollout.n == 8 and rollout.multi_turn.enable is True
    actor = omega_conf_to_dataclass(composed.actor_rollout_ref.actor)
    assert actor.kl_loss_type == "low_var_kl"


def test_plugin_and_trainer_mode_reach_every_ray_process(composed):
    assert composed.trainer.use_v1 is True and composed.trainer.v1.trainer_mode == "unidoc_sync"
    env_vars = composed.ray_kwargs.ray_init.runtime_env.env_vars
    assert env_vars.VERL_USE_EXTERNAL_MODULES == "unidoc_rl.verl_plugin"
    assert composed.actor_rollout_ref.rollout.name == "vllm" and composed.trainer.get("device", "cuda") != "cpu"


def test_cpu_platform_selects_the_cpu_recipe(repo_root):
    env = {**os.environ, **ENV, "DRY_RUN": "1", "PYTHON": sys.executable, "VERL_PLATFORM": "cpu"}
    env.pop("N_GPUS")
    result = subprocess.run(
        ["bash", "scripts/train.sh"], cwd=repo_root, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = OmegaConf.create(yaml.safe_load(result.stdout))
    assert config.trainer.device == "cpu" and config.trainer.n_gpus_per_node == 1
    assert config.actor_rollout_ref.rollout.name == "unidoc_local"
    assert config.actor_rollout_ref.actor.strategy == "fsdp2" and config.actor_rollout_ref.actor.use_kl_loss is False
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    ray_init = config.ray_kwargs.ray_init
    assert (ray_init.address, ray_init.num_gpus) == ("local", 1)
    assert ray_init.runtime_env.env_vars.VERL_PLATFORM == "cpu"
    # The paper's settings the CPU recipe does not touch still hold.
    assert config.algorithm.adv_estimator == "grpo" and config.actor_rollout_ref.actor.clip_ratio == 0.2


def test_dapo_recipe_filters_groups_on_the_answer_component(repo_root):
    env = {**os.environ, **ENV, "DRY_RUN": "1", "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", "scripts/train.sh", "+experiment=dapo"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = OmegaConf.create(yaml.safe_load(result.stdout))
    groups = config.algorithm.filter_groups
    assert groups.enable is True and groups.metric == "answer"
    from dataclasses import fields

    from unidoc_rl.rewards.scorer import RewardBreakdown

    assert groups.metric in {field.name for field in fields(RewardBreakdown)}  # a reward_extra_info key
    assert config.actor_rollout_ref.actor.clip_ratio_high == 0.28 and config.trainer.use_v1 is True
