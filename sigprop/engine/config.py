"""The types of the training app's settings, checked by Hydra as it composes ``conf/config.yaml``.

``TrainConfig`` is registered once in Hydra's ``ConfigStore`` as ``train_schema``, the first entry of
``conf/config.yaml``'s defaults list: the values (and their comments) are in the YAML, the types here.
So ``epochs=abc``, ``step.mode=fast`` or an unknown key stop the run while Hydra composes the
config; ``check_settings`` adds the ranges a type cannot express and the types and ranges of the
groups' settings (``settings.py``). Every problem is a ``ConfigError``
or a Hydra/OmegaConf error, reported by ``one_line`` as one line that names the setting.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..utils import one_line
from .checkpoint import CHECKPOINT_FILE
from .settings import problems

SCHEMA = "train_schema"
# The one rule for "does this setting change what a run computes": these do not (where and how it runs and is
# watched, and the training step's options that give the same updates). A key names itself and every key
# below it (``logger`` covers ``logger.mode``). Used for a run's name (Hydra's ``override_dirname``, the W&B
# run and group: conf/config.yaml's ``exclude_keys`` call ``neutral_keys``), compare.py's labels and
# reproduce.py's recorded commands.
NEUTRAL = ("device", "threads", "data_dir", "resume", "run_dir", "progress", "refresh_every", "print_config", "logger",
           "step.mode", "step.recompute_chunk", "step.channels_last", "step.compile", "parallel")
# What may differ from the checkpoint's settings when a run is resumed: how long, and the neutral settings
# but the step's (a resumed step continues the optimizers' state as it was built), never what is trained.
# Every other difference refuses the resume (``resume_differences``).
RESUMABLE = ("epochs", *(k for k in NEUTRAL if not k.startswith("step.")))


def _under(key: str, keys: tuple[str, ...]) -> bool:
    return any(key == k or key.startswith(f"{k}.") for k in keys)


def changes_results(override: str) -> bool:
    """Whether a command-line override changes what a run computes (``epochs=3`` does, ``threads=1``,
    ``logger.mode=offline`` and Hydra's own ``hydra.*`` do not): the ``NEUTRAL`` rule."""
    key = override.split("=", 1)[0].lstrip("+~")
    return not key.startswith("hydra.") and not _under(key, NEUTRAL)


def neutral_keys(overrides: Any) -> list[str]:
    """The keys of ``overrides`` that do not change results, for Hydra's ``override_dirname.exclude_keys``
    (which matches keys exactly, so ``logger.mode`` must be named, not only ``logger``)."""
    return [str(o).split("=", 1)[0].lstrip("+~") for o in overrides or [] if not changes_results(str(o))]


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line that names it."""


class Mode(str, Enum):
    """How the local losses are applied (the same updates in all three)."""

    fused = "fused"  # one backward over all local losses and the output loss, one optimizer step
    layerwise = "layerwise"  # each layer steps its own optimizer as soon as its loss is known
    lowmem = "lowmem"  # layerwise, each layer's graph rebuilt recompute_chunk samples at a time


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast; weights, gradients and optimizer state stay fp32


@dataclass
class StepConfig:
    """The training step's settings (``step.*``): how the local losses are applied, and speed options."""

    mode: Mode = MISSING
    recompute_chunk: int = MISSING
    fuse_ht: Optional[bool] = MISSING
    precision: Precision = MISSING
    channels_last: bool = MISSING
    compile: bool = MISSING


@dataclass
class ParallelConfig:
    """Layer parallelism (``parallel.*``, sigprop/engine/pipeline.py): the model split into stages, one per process."""

    stages: int = MISSING
    split: Any = MISSING  # auto, null or a list of layer indices
    timeout: float = MISSING


@dataclass
class TrainConfig:
    """Every top-level setting of ``conf/config.yaml``; the config groups are built by their ``_target_``."""

    seed: int = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    test_batch_size: int = MISSING
    device: str = MISSING
    threads: Optional[int] = MISSING
    data_dir: str = MISSING
    resume: Optional[str] = MISSING
    progress: Any = MISSING  # auto, true or false (checked by check_settings: settings.SETTINGS)
    refresh_every: int = MISSING
    print_config: bool = MISSING
    run_dir: str = MISSING
    step: StepConfig = field(default_factory=StepConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    dataset: Any = MISSING
    model: Any = MISSING
    signal: Any = MISSING
    propagator: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None
    logger: Any = None


ConfigStore.instance().store(name=SCHEMA, node=TrainConfig)
# conf/config.yaml: ``exclude_keys: ${sigprop_neutral:${hydra.overrides.task}}``.
if not OmegaConf.has_resolver("sigprop_neutral"):
    OmegaConf.register_new_resolver("sigprop_neutral", neutral_keys)


def check_settings(cfg: DictConfig) -> None:
    """Every setting's type and range (``settings.SETTINGS``: the groups' settings, and the ranges of the
    top-level ones, whose types Hydra checked), the device and the checkpoint to resume from: one line
    listing every setting that is refused."""
    refused = problems(cfg)
    if refused:
        raise ConfigError("; ".join(refused))
    check_run_dir(cfg)
    resolve_device(_select(cfg, "device"))
    resume = _select(cfg, "resume")
    if resume is not None:
        checkpoint_path(resume)


RUN_DIR = "${hydra:runtime.output_dir}"  # conf/config.yaml's run_dir: the folder Hydra made for this run


def check_run_dir(cfg: DictConfig) -> None:
    """``run_dir`` is the folder Hydra created for this run, not a setting: pointed elsewhere, the run would write
    its record into a folder it does not own (another run's). Its place is chosen with ``hydra.run.dir``."""
    if "run_dir" not in cfg:
        return
    raw = OmegaConf.to_container(OmegaConf.masked_copy(cfg, ["run_dir"]), resolve=False)["run_dir"]  # type: ignore[index]
    if raw != RUN_DIR:
        raise ConfigError(
            f"run_dir={raw}: run_dir is the folder Hydra creates for the run; choose it with hydra.run.dir= "
            "(a sweep's with hydra.sweep.dir=)"
        )


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{key}: {one_line(err)}") from None


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: must be auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r}: must be auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: torch finds no CUDA device here; use device=cpu or device=auto")
    return device


def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """One step of ``optimizer`` (built on a dummy parameter) as the training step takes it: without a closure,
    after a dense gradient. An optimizer that needs either (``LBFGS``, ``SparseAdam``) raises ``ValueError``."""
    name = f"optimizer._target_ is {type(optimizer).__qualname__}, which"
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ValueError(
            f"{name} needs a closure in step() (it evaluates the loss several times per step), but the training "
            "step calls step() once per batch: choose an optimizer whose closure is optional (Adam, SGD, ...)"
        )
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = torch.zeros_like(parameter)
    try:
        optimizer.step()
    except (RuntimeError, ValueError, TypeError) as err:  # e.g. SparseAdam: "does not support dense gradients"
        raise ValueError(f"{name} cannot step on the dense gradients the training step computes ({one_line(err)})") from None


def checkpoint_path(resume: str) -> Path:
    """The checkpoint file ``resume`` names: the file itself, or a run folder holding ``checkpoint.pt``."""
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file")
    return path


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as a checkpoint stores it: ``resolved`` (the values that ran) and ``raw`` (with the
    ``${...}`` interpolations, so a value derived from a resumable setting such as ``data_dir`` can differ)."""
    # Without Hydra's node and run_dir (an interpolation of it): the folder is not a setting of the training.
    node = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("hydra", "run_dir")])
    return {
        "resolved": OmegaConf.to_container(node, resolve=True, enum_to_str=True),
        "raw": OmegaConf.to_container(node, resolve=False, enum_to_str=True),
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def resumable(key: str) -> bool:
    """Whether the setting ``key`` (``epochs``, ``logger.mode``, ...) may change when a run is resumed."""
    return _under(key, RESUMABLE)


def resume_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Every setting of ``now`` that differs from the checkpoint's ``saved`` (both from ``run_config``), as
    ``key=<now> (checkpoint: <saved>)``, except the ``RESUMABLE`` ones and values derived from them."""
    saved_values, now_values = _flatten(saved["resolved"]), _flatten(now["resolved"])
    saved_raw, now_raw = _flatten(saved["raw"]), _flatten(now["raw"])
    differences = []
    for key in dict.fromkeys([*saved_values, *now_values]):
        if resumable(key):
            continue
        raw = saved_raw.get(key)
        if isinstance(raw, str) and "${" in raw and raw == now_raw.get(key):
            continue  # the same interpolation: its sources are compared themselves
        missing = "(not set)"
        before, after = saved_values.get(key, missing), now_values.get(key, missing)
        if before != after:
            differences.append(f"{key}={_show(after)} (checkpoint: {_show(before)})")
    return differences


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return "null" if value is None else str(value)


def check_resume(resume: str, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse a resume whose settings differ from the checkpoint's: one line listing each difference."""
    differences = resume_differences(saved, now)
    if differences:
        allowed = ", ".join(f"{k}.*" if k == "logger" else k for k in RESUMABLE if k not in ("resume", "run_dir"))
        raise ConfigError(
            f"resume={resume}: these settings differ from the checkpoint's: {'; '.join(differences)}. "
            f"A resumed run continues the same training: only {allowed} may change"
        )
