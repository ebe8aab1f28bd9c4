"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .step import TrainStep

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 2  # 2: the whole model is a models.Forward (backprop too), saved under "step"


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """The state of every random source a run draws from: torch (CPU and CUDA), numpy, Python, the loader's generator."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
        "loader": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what ``rng_state`` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_tuples(state["python"]))
    generator.set_state(state["loader"])


def _tuples(value: Any) -> Any:
    # torch.load gives back lists where random.getstate() had tuples.
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def save(
    path: str | os.PathLike[str], epoch: int, step: TrainStep, generator: torch.Generator, history: list[dict[str, float]]
) -> None:
    """Write the state after ``epoch`` completed epochs to ``path`` (a temporary file renamed over it: never half written)."""
    path = Path(path)
    state = {
        "format": FORMAT,
        "epoch": epoch,
        "step": step.state_dict(),
        "rng": rng_state(generator),
        "history": history,
    }
    tmp = path.with_name(f"{path.name}.part")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by ``save`` (tensors and plain values only: no code is unpickled)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} is not a sigprop checkpoint")
    if state["format"] != FORMAT:
        raise ValueError(f"{path} has checkpoint format {state['format']}; this version reads format {FORMAT}")
    return state


def restore(state: dict[str, Any], step: TrainStep, generator: torch.Generator) -> tuple[int, list[dict[str, float]]]:
    """Load ``state`` into ``step`` and the random sources; returns ``(completed epochs, metrics history)``."""
    step.load_state_dict(state["step"])
    set_rng_state(state["rng"], generator)
    return int(state["epoch"]), list(state["history"])
