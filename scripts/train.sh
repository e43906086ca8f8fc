#!/usr/bin/env bash
# GRPO training on verl (Ray, FSDP, vLLM). Run on the head node of a GPU cluster from the repository root:
#
#   MODEL_PATH=saves/unidoc-sft TRAIN_FILE=data/rl/train.parquet VAL_FILE=data/rl/val.parquet \
#   SEARCH_URL=http://10.0.0.5:8001 JUDGE_URL=http://10.0.0.6:8000/v1 N_GPUS=8 NNODES=1 \
#   bash scripts/train.sh trainer.total_epochs=2 actor_rollout_ref.rollout.n=8
#
# SEARCH_URL is the search service's root or its /search endpoint. The answer judge is exactly one of:
#   JUDGE_URL  an OpenAI-compatible endpoint (/v1) judged directly (JUDGE_MODEL names the model, default `judge`);
#   RM_URL     the project's judge service, as the reference sets it (http://host:8003/eval; judge backend
#              evaluator_service; the service's key, if it has one, in UNIDOC_JUDGE_API_KEY).
#
# On a machine without GPUs, VERL_PLATFORM=cpu runs the same trainer on CPU with the project's plugin
# (configs/experiment/cpu.yaml; MODEL_PATH=tiny is the offline tiny policy):
#
#   VERL_PLATFORM=cpu MODEL_PATH=tiny TRAIN_FILE=... VAL_FILE=... SEARCH_URL=... JUDGE_URL=... bash scripts/train.sh
#
# EXPERIMENT names a recipe under configs/experiment/ (e.g. EXPERIMENT=dapo; on CPU it replaces `cpu`, so it must
# compose it, as demo_cpu does). Every argument is passed through to Hydra as an override. DRY_RUN=1 prints the
# composed config instead of training.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${MODEL_PATH:?set MODEL_PATH to the SFT checkpoint (Hugging Face format)}"
: "${TRAIN_FILE:?set TRAIN_FILE to the RL parquet from python -m unidoc_rl.data.prepare}"
: "${VAL_FILE:?set VAL_FILE to the validation parquet}"
: "${SEARCH_URL:?set SEARCH_URL to the search service, e.g. http://127.0.0.1:8001}"
if [[ -n "${RM_URL:-}" && -n "${JUDGE_URL:-}" ]]; then
  echo "set either RM_URL (the judge service's /eval) or JUDGE_URL (an OpenAI-compatible /v1 judge), not both" >&2
  exit 2
elif [[ -n "${RM_URL:-}" ]]; then
  judge_args=(
    "reward.reward_kwargs.judge.backend=evaluator_service"
    "reward.reward_kwargs.judge.base_url=$RM_URL"
    "reward.reward_kwargs.judge.api_key_env=UNIDOC_JUDGE_API_KEY"
  )
elif [[ -n "${JUDGE_URL:-}" ]]; then
  judge_args=(
    "reward.reward_kwargs.judge.base_url=$JUDGE_URL"
    "reward.reward_kwargs.judge.model=${JUDGE_MODEL:-judge}"
  )
else
  echo "set RM_URL to the judge service's /eval (e.g. http://127.0.0.1:8003/eval) or JUDGE_URL to an" \
    "OpenAI-compatible judge endpoint (e.g. http://127.0.0.1:8000/v1)" >&2
  exit 2
fi
PYTHON="${PYTHON:-python}"
experiment=()
if [[ "${VERL_PLATFORM:-}" == "cpu" ]]; then
  experiment=("+experiment=${EXPERIMENT:-cpu}")
  N_GPUS="${N_GPUS:-1}"
elif [[ -n "${EXPERIMENT:-}" ]]; then
  experiment=("+experiment=$EXPERIMENT")
fi
N_GPUS="${N_GPUS:-8}"
NNODES="${NNODES:-1}"
if [[ "$MODEL_PATH" == "tiny" ]]; then
  MODEL_PATH="$("$PYTHON" -c "from unidoc_rl.standins.tiny_models import tiny_policy_path; print(tiny_policy_path())")"
fi

# verl loads the project's plugin on import, here and (through the runtime_env in configs/unidoc_grpo.yaml) in every
# Ray process; this checkout's code comes first on the path of both.
export VERL_USE_EXTERNAL_MODULES="unidoc_rl.verl_plugin${VERL_USE_EXTERNAL_MODULES:+,$VERL_USE_EXTERNAL_MODULES}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

hydra_args=(
  --config-path "$PWD/configs"
  --config-name unidoc_grpo
  "${experiment[@]}"
  "actor_rollout_ref.model.path=$MODEL_PATH"
  "data.train_files=$TRAIN_FILE"
  "data.val_files=$VAL_FILE"
  "unidoc_agent.search_url=$SEARCH_URL"
  "${judge_args[@]}"
  "actor_rollout_ref.rollout.agent.agent_loop_config_path=$PWD/configs/agent_loop.yaml"
  "trainer.n_gpus_per_node=$N_GPUS"
  "trainer.nnodes=$NNODES"
)

if [[ "${DRY_RUN:-0}" == "1" ]]; then
  exec "$PYTHON" -m verl.trainer.main_ppo "${hydra_args[@]}" "$@" --cfg job
fi
exec "$PYTHON" -m verl.trainer.main_ppo "${hydra_args[@]}" "$@"
