"""Fail the install when the CPU environment drifted: another torch, or torchvision pulled in by a dependency."""

import importlib.util
import sys

import torch

problems = []
if not torch.cuda.is_available():
    if importlib.util.find_spec("torchvision") is not None:
        problems.append(
            "torchvision is installed: its PyPI wheel is CUDA-linked and breaks CPU torch and transformers. "
            "Find the package that required it and install that one with --no-deps (requirements_nodeps.txt)."
        )
    if not torch.__version__.startswith("2.13.0"):
        problems.append(f"torch {torch.__version__} is installed, expected 2.13.0 (held by constraints.txt)")
if problems:
    sys.exit("environment check failed:\n- " + "\n- ".join(problems))
print(f"environment ok: torch {torch.__version__}, no torchvision")
