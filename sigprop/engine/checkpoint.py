"""Checkpoints: everything a run needs to continue exactly where it stopped, written atomically.

A checkpoint also holds the run's composed config, so a resumed run can be checked against it
(``config.resume_differences``): it continues the same training or it does not start.

``load`` trusts nothing in the file: every record of the zip archive ``torch.save`` writes is checked
against the CRC-32 stored beside it (a flipped byte in a tensor is refused, not trained on), only tensors
and plain values are unpickled, and every field is checked for its type and range before a run uses it.
"""
from __future__ import annotations

import os
import pickle
import random
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import one_line
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
    """Read a checkpoint written by ``save``: its records checked against their checksums, its content
    checked field by field. Raises ``ValueError`` with one line that says what is wrong with the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"  # what torch.save writes
        if not zipped:
            raise ValueError(f"{path} is not a sigprop checkpoint (not a file torch.save wrote)")
        _verify_records(path)
        state = _unpickle(path)
    except OSError as err:
        raise ValueError(f"{path} cannot be read: {err.strerror or err}") from None
    problem = _format_problem(state) or _content_problem(state)
    if problem:
        raise ValueError(f"{path} {problem}")
    return state


def _unpickle(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``: tensors and plain values only, no code is unpickled."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files that are not checkpoints
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for files it did not write; say which case
        # torch's message advises weights_only=False, i.e. running whatever code the file names: never that.
        if isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err):
            raise ValueError(
                f"{path} is not a sigprop checkpoint: it names Python objects beyond tensors and plain values "
                "(refused: checkpoints are loaded with weights_only=True; do not load files you do not trust)"
            ) from None
        size = path.stat().st_size
        raise ValueError(f"{path} is truncated or corrupt ({size:,} bytes; torch cannot read it: {one_line(err, limit=160)})") from None


def _verify_records(path: Path) -> None:
    """Check every record of the checkpoint's zip archive against the CRC-32 ``torch.save`` stored with it."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record; the name of the first whose checksum differs
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as err:
        raise ValueError(f"{path} is truncated or corrupt ({size:,} bytes; {one_line(err, limit=160)}): it cannot be resumed from") from None
    if bad is not None:
        raise ValueError(
            f"{path} is corrupt: its record {bad} does not match the checksum stored with it (the file changed "
            "after it was written): it cannot be resumed from"
        )


def _format_problem(state: Any) -> str | None:
    if not isinstance(state, dict) or "format" not in state:
        return "is not a sigprop checkpoint (no format field)"
    version = state["format"]
    if type(version) is not int:  # noqa: E721 - a bool or a string "3" is not a format number
        return f"is not a sigprop checkpoint (its format field is {version!r}, not a number)"
    if version != FORMAT:
        return (
            f"has checkpoint format {version}; this version reads format {FORMAT} (format 3 records the run's "
            "settings, so a resumed run can be checked against them): start a new run instead of resuming this one"
        )
    return None


# What every field of a checkpoint holds: a type, or the fields of a dict.
FIELDS: dict[str, Any] = {
    "epoch": int,
    "step": {"model": dict, "optimizers": list, "schedulers": list},
    "rng": {"torch": torch.Tensor, "cuda": list, "numpy": list, "python": (list, tuple), "loader": torch.Tensor},
    "history": list,
    "config": {"resolved": dict, "raw": dict},
}


def _content_problem(state: dict[str, Any]) -> str | None:
    """What makes ``state`` unusable for a resume (a field missing or of the wrong type, an epoch count that
    its history contradicts, a random state that cannot be restored), or ``None``."""
    problem = _field_problem(state, FIELDS, "")
    if problem:
        return f"is not a usable sigprop checkpoint: {problem}"
    epoch, history = state["epoch"], state["history"]
    if type(epoch) is not int or epoch < 1:  # noqa: E721 - bool is an int subclass
        return f"is not a usable sigprop checkpoint: epoch={epoch!r} (a checkpoint holds at least one completed epoch)"
    epochs = [row.get("epoch") if isinstance(row, dict) else None for row in history]
    if epochs != list(range(1, epoch + 1)):
        return f"is not a usable sigprop checkpoint: epoch={epoch} but its metrics history holds epochs {_short(epochs)}"
    try:
        _rng_problem(state["rng"])
    except (TypeError, ValueError, RuntimeError, IndexError) as err:
        return f"is not a usable sigprop checkpoint: its random state cannot be restored ({one_line(err, limit=160)})"
    return None


def _field_problem(value: dict[str, Any], fields: dict[str, Any], prefix: str) -> str | None:
    for name, kind in fields.items():
        if name not in value:
            return f"no {prefix}{name} field"
        if isinstance(kind, dict):
            if not isinstance(value[name], dict):
                return f"{prefix}{name} is {type(value[name]).__name__}, not a dict"
            problem = _field_problem(value[name], kind, f"{prefix}{name}.")
            if problem:
                return problem
        elif not isinstance(value[name], kind):
            return f"{prefix}{name} is {type(value[name]).__name__}, not {_kind_name(kind)}"
    return None


def _kind_name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("a tensor" if k is torch.Tensor else f"a {k.__name__}" for k in kinds)


def _short(values: list[Any]) -> str:
    return str(values if len(values) <= 6 else [*values[:3], "...", *values[-2:]]).replace("'...'", "...")


def _rng_problem(rng: dict[str, Any]) -> None:
    """Restore ``rng`` into fresh random sources (never the process's own): raises what restoring it would."""
    torch.Generator().set_state(rng["torch"])
    torch.Generator().set_state(rng["loader"])
    name, keys, *rest = rng["numpy"]
    np.random.RandomState().set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.Random().setstate(_tuples(rng["python"]))
    if not all(isinstance(s, torch.Tensor) for s in rng["cuda"]):
        raise TypeError("its CUDA states are not tensors")


def restore(state: dict[str, Any], step: TrainStep, generator: torch.Generator) -> tuple[int, list[dict[str, float]]]:
    """Load ``state`` into ``step`` and the random sources; returns ``(completed epochs, metrics history)``."""
    step.load_state_dict(state["step"])
    set_rng_state(state["rng"], generator)
    return int(state["epoch"]), list(state["history"])
