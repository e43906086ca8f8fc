from pathlib import Path

from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent


def requirements(name: str) -> list[str]:
    lines = (HERE / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


setup(
    name="unidoc-rl",
    version="0.1.0",
    description=(
        "Train vision-language models as visual-RAG agents over document page images "
        "(search, select, crop, answer) with SFT and GRPO."
    ),
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["unidoc_rl*", "search_engine*"]),
    include_package_data=True,
    package_data={"unidoc_rl": ["**/*.yaml", "**/*.txt", "**/*.jinja", "viewer/static/*.css"]},
    install_requires=[
        "torch>=2.6",
        "numpy>=1.26",
        "pillow>=10",
        "tokenizers>=0.21",
        "transformers==5.10.4",
        "safetensors>=0.4",
        "pyarrow>=15",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "openai>=1.40",
        # openai's own HTTP client package: the judge sizes its connection pool with httpx2.Limits.
        "httpx2",
        "httpx>=0.27",
        "tqdm",
        # The agent's prompt templates (unidoc_rl/env/prompt_templates/*.jinja).
        "jinja2>=3.1",
    ],
    # The fused MaxSim kernel (search_engine/_kernel.c) is optional: where it does not compile, the install goes on
    # and search uses the torch path.
    ext_modules=[
        Extension("search_engine._kernel", ["search_engine/_kernel.c"], extra_compile_args=["-O3"], optional=True)
    ],
    # The console commands (`make install` puts them in .venv/bin); each is also a module or script command
    # (README.md's table), which keeps working without the install's scripts.
    entry_points={
        "console_scripts": [
            "unidoc-ingest = search_engine.ingestion:main",
            "unidoc-build-ivf = search_engine.ivf:main",
            "unidoc-search-service = search_engine.search_engine_api:main",
            "unidoc-synthesize = unidoc_rl.synthesis.generate_cot_data:main",
            "unidoc-convert-sft = unidoc_rl.synthesis.convert_to_llamafactory:main",
            "unidoc-prepare-data = unidoc_rl.data.prepare:main",
            "unidoc-judge-service = unidoc_rl.judge.evaluator_api:main",
            "unidoc-eval = unidoc_rl.eval.__main__:main",
            "unidoc-eval-adapters = unidoc_rl.eval.adapters:main",
            "unidoc-view = unidoc_rl.viewer.__main__:main",
            "unidoc-demo = unidoc_rl.demo:console_main",
            "unidoc-tiny-models = unidoc_rl.standins.tiny_models:main",
        ]
    },
    extras_require={
        "search": requirements("requirements_search.txt"),
        "train": requirements("requirements_train.txt"),
        "gpu": requirements("requirements_gpu.txt"),
        "dev": requirements("requirements_dev.txt"),
    },
)
