"""Checkpoints of the local trainer, with everything an exact resume needs.

Layout of `<dir>/global_step_<k>/`:
- `model/`: the policy in Hugging Face format (`save_pretrained` + processor), loadable as any checkpoint
- `optimizer.pt`, `scheduler.pt`: optimizer and LR schedule state (tensors and plain containers only)
- `rng.pt`: torch RNG state; `trainer_state.json`: step, data position, Python RNG state

A checkpoint is written into a staging folder and renamed into place, then `latest` is replaced: a crash while
saving leaves the previous checkpoint as the latest one. Loading uses `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from unidoc_rl.atomic import atomic_directory, atomic_write_bytes

LATEST = "latest"


@dataclass
class TrainerState:
    global_step: int
    epoch: int
    position: int
    """Index of the next prompt within the epoch's shuffled order."""
    python_rng: list

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def step_dir(root: Path, step: int) -> Path:
    return root / f"global_step_{step}"


def save_checkpoint(root: Path, model, processor, optimizer, scheduler, state: TrainerState) -> Path:
    target = step_dir(root, state.global_step)

    def write(staging: Path) -> None:
        model.save_pretrained(staging / "model")
        processor.save_pretrained(staging / "model")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
        torch.save({"torch": torch.get_rng_state()}, staging / "rng.pt")
        (staging / "trainer_state.json").write_text(state.to_json())

    if target.exists():
        shutil.rmtree(target)
    atomic_directory(target, write)
    atomic_write_bytes(root / LATEST, (target.name + "\n").encode())
    return target


def latest_checkpoint(root: Path) -> Path | None:
    pointer = root / LATEST
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "trainer_state.json").exists() else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainerState:
    """Restore weights, optimizer, schedule and RNG in place; returns the data position to continue from."""
    # from_pretrained applies the model's checkpoint key mapping (save_pretrained writes the legacy names).
    saved = type(model).from_pretrained(path / "model", dtype=model.dtype)
    model.load_state_dict(saved.state_dict())
    del saved
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    torch.set_rng_state(torch.load(path / "rng.pt", weights_only=True)["torch"])
    state = TrainerState(**json.loads((path / "trainer_state.json").read_text()))
    version, internal, gauss = state.python_rng
    random.setstate((version, tuple(internal), gauss))
    return state


def python_rng_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
