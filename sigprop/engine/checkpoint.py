"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

A checkpoint also holds the run's composed config, so a resumed run can be checked against it
(``config.resume_differences``): it continues the same training or it does not start.
"""
from __future__ import annotations

import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .step import TrainStep

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 3  # 3: with the composed config ("config"); 2: the whole model is a models.Forward, saved under "step"


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
    path: str | os.PathLike[str],
    epoch: int,
    step: TrainStep,
    generator: torch.Generator,
    history: list[dict[str, float]],
    config: dict[str, Any],
) -> None:
    """Write the state after ``epoch`` completed epochs to ``path`` (a temporary file renamed over it: never half
    written; a failed write, e.g. on a full disk, leaves no temporary file). ``config``: the run's composed config,
    ``{"resolved": ..., "raw": ...}`` (``config.run_config``)."""
    path = Path(path)
    state = {
        "format": FORMAT,
        "epoch": epoch,
        "step": step.state_dict(),
        "rng": rng_state(generator),
        "history": history,
        "config": config,
    }
    tmp = path.with_name(f"{path.name}.part")
    try:
        with open(tmp, "wb") as f:  # through a Python file: a full disk raises OSError (ENOSPC) behind torch's error
            torch.save(state, f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by ``save`` (tensors and plain values only: no code is unpickled, whatever
    the file holds). Raises ``ValueError`` with one line that says what is wrong with the file."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files that are not checkpoints
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise ValueError(f"{path} cannot be read: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for files it did not write; say which case
        # torch's message advises weights_only=False, i.e. running whatever code the file names: never that.
        if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):
            raise ValueError(
                f"{path} is not a sigprop checkpoint: it names Python objects beyond tensors and plain values "
                "(refused: checkpoints are loaded with weights_only=True; do not load files you do not trust)"
            ) from None
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"  # what torch.save writes
        if zipped:
            size = path.stat().st_size
            raise ValueError(f"{path} is truncated or corrupt ({size:,} bytes; torch cannot read it: {_first_sentence(err)})") from None
        raise ValueError(f"{path} is not a sigprop checkpoint (not a file torch.save wrote)") from None
    if not isinstance(state, dict) or "format" not in state:
        raise ValueError(f"{path} is not a sigprop checkpoint (no format field)")
    if state["format"] != FORMAT:
        raise ValueError(
            f"{path} has checkpoint format {state['format']}; this version reads format {FORMAT} "
            "(format 3 records the run's settings, so a resumed run can be checked against them)"
        )
    return state


def _first_sentence(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text.split(". ")[0]


def restore(state: dict[str, Any], step: TrainStep, generator: torch.Generator) -> tuple[int, list[dict[str, float]]]:
    """Load ``state`` into ``step`` and the random sources; returns ``(completed epochs, metrics history)``."""
    step.load_state_dict(state["step"])
    set_rng_state(state["rng"], generator)
    return int(state["epoch"]), list(state["history"])
