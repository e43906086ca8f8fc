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

.PHONY: install sft-env test demo lint corpus tiny-models clean-venv browser

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

test: $(STAMP) $(SFT_STAMP) browser
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
	$(BIN)/python -m unidoc_rl.testing.tiny_models

clean-venv:
	rm -rf $(VENV) $(SFT_VENV)
