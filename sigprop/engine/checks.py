"""Checks of a run's settings: one-line errors that name the setting, raised before anything is written.

Hydra checks the types while it composes the config (``config.py``). ``check_config`` runs the
checks that need nothing built, before Hydra creates the run's folder (and for every job of a
sweep before the first one starts, ``sweeps.ConfigCheck``): the settings' ranges, every config
group's target and arguments, the schedule, and a resumed run's settings against its checkpoint.
``check_forward`` and ``check_batch_statistics`` need the data and the network; the run calls them
after building those, before its first step.
"""
from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..data.datasets import ImageData
from ..data.loader import TensorLoader
from ..loss import needs_per_class_signal
from ..propagators import Propagator
from . import checkpoint, config
from ..utils import one_line
from .config import ConfigError, check_resume, check_settings, checkpoint_path, run_config
from .parallel import DataParallel, data_parallel
from .pipeline import check_stages
from .rundir import choices_of
from .step import TrainStep

# The config groups of conf/, in the order a run builds them; those called with what the run builds
# (the network with the data's shape, the optimizer with parameters) need ``_partial_: true``.
GROUPS = ("dataset", "model", "signal", "propagator", "loss", "optimizer", "scheduler", "logger")
PARTIAL = ("model", "signal", "propagator", "optimizer", "scheduler", "logger")
OPTIONAL = ("scheduler", "logger")  # may be empty (scheduler=none, logger=none)
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def label(group: str, choices: Mapping[str, str]) -> str:
    """``group=choice`` for messages (just ``group`` when the choice is unknown)."""
    return f"{group}={choices[group]}" if group in choices else group


@contextmanager
def blame(setting: str) -> Iterator[None]:
    """Turn an error raised while building ``setting`` into a one-line ``ConfigError`` naming it."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to build a configured object is a config problem
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        raise ConfigError(f"{setting}: {one_line(cause)}") from err


def check_config(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> None:
    """Every check that needs nothing built: the settings, every group's target and arguments, the schedule,
    the processes of a torchrun run, and a resumed run's settings against its checkpoint."""
    choices = choices_of(cfg) if choices is None else choices
    check_settings(cfg)
    check_stages(cfg) or check_data_parallel(cfg)
    targets = {group: check_group(cfg, group, choices) for group in GROUPS}
    if targets["scheduler"] is not None:
        check_schedule(cfg.scheduler)
    local = isinstance(targets["propagator"], type) and targets["propagator"].trained_by == "local"
    if local and needs_per_class_signal(targets["loss"]) and not cfg.signal.get("per_class", False):
        raise ConfigError(f"{label('loss', choices)} needs one signal row per class: add signal.per_class=true")
    if cfg.resume is not None:
        check_resume(cfg.resume, load_checkpoint(cfg.resume)["config"], run_config(cfg))


def check_group(cfg: DictConfig, group: str, choices: Mapping[str, str]) -> Any:
    """What ``group``'s ``_target_`` names, checked without building it: importable, called with arguments it
    takes, a partial where the run calls it later, a propagator class for ``propagator``. ``None`` for an
    empty optional group."""
    node = cfg.get(group)
    if node is None or (isinstance(node, DictConfig) and "_target_" not in node):
        if node or group not in OPTIONAL:  # a non-empty option without a target is a mistake, not "none"
            raise ConfigError(f"{label(group, choices)}: the config has no _target_ (choose an option of conf/{group}/)")
        return None
    with blame(label(group, choices)):
        target = locate(node._target_)
        arguments = {k: v for k, v in node.items() if k not in HYDRA_KEYS}
        inspect.signature(target).bind_partial(**arguments)
    if group in PARTIAL and not node.get("_partial_", False):
        raise ConfigError(f"{label(group, choices)}: needs _partial_: true (it is called with what the run builds)")
    if group == "propagator" and not (isinstance(target, type) and issubclass(target, Propagator)):
        raise ConfigError(f"{label(group, choices)}: must name a sigprop.propagators class (Loss, Fixed, Identity)")
    return target


def locate(path: str) -> Any:
    """The object a dotted ``_target_`` names, imported but not called. Each name is an attribute of what comes
    before it where one exists (``sigprop.nets.mlp`` is the function the package exports, not its module), else a
    module to import, as Hydra resolves it."""
    parts = path.split(".")
    try:
        found = importlib.import_module(parts[0])
    except ModuleNotFoundError as err:
        if err.name != parts[0]:
            raise  # the module exists but one of its own imports is missing: that is the error to show
        raise ImportError(f"{path!r} not found: no module {parts[0]!r}") from None
    for end in range(1, len(parts)):
        if hasattr(found, parts[end]):
            found = getattr(found, parts[end])
            continue
        module_name = ".".join(parts[: end + 1])
        try:
            found = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            raise ImportError(f"{path!r} not found: {'.'.join(parts[:end])} has no {parts[end]!r}") from None
    return found


def check_schedule(scheduler: DictConfig) -> None:
    """``milestones`` must be epochs (whole numbers from 1) and ``gamma`` a positive number: ``MultiStepLR`` would
    take ``milestones=abc`` as three milestones that never come."""
    if "milestones" in scheduler:
        milestones = scheduler.milestones
        if (
            isinstance(milestones, (str, bytes)) or not isinstance(milestones, (Sequence, ListConfig))
            or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones)
        ):
            raise ConfigError(f"scheduler.milestones={_plain(milestones)}: must be a list of epochs (whole numbers from 1), e.g. [10,15]")
    if "gamma" in scheduler:
        gamma = scheduler.gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < math.inf:
            raise ConfigError(f"scheduler.gamma={_plain(gamma)}: must be a positive number (the factor at each milestone)")


def _plain(value: Any) -> str:
    return str(OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value).replace(" ", "")


def check_optimizer(optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer], choices: Mapping[str, str]) -> None:
    """What ``optimizer`` (the optimizer group's factory) builds, tried for one step on a stand-in parameter the
    way the training step calls it (``config.check_optimizer``): LBFGS and SparseAdam are refused here."""
    with blame(label("optimizer", choices)):
        config.check_optimizer(optimizer([torch.nn.Parameter(torch.zeros(1))]))


def check_data_parallel(cfg: DictConfig) -> DataParallel | None:
    """This process's ``DataParallel`` under torchrun (``None`` otherwise), whose ranks split every batch evenly."""
    parallel = data_parallel()
    if parallel is not None and cfg.batch_size % parallel.world_size:
        raise ConfigError(f"batch_size={cfg.batch_size}: must be divisible by the {parallel.world_size} processes torchrun started")
    return parallel


def load_checkpoint(resume: str) -> dict[str, Any]:
    """The checkpoint ``resume`` names; a missing or unreadable file is a ``ConfigError`` that says what is wrong."""
    try:
        return checkpoint.load(checkpoint_path(resume))
    except ValueError as err:
        raise ConfigError(f"resume={resume}: {one_line(err)}") from None


def check_forward(step: TrainStep, data: ImageData, device: torch.device, choices: Mapping[str, str]) -> None:
    """One evaluation pass over two samples (labels 0 and the last class), so a signal or network that does
    not fit the data fails here, before any file is written, instead of in the first step."""
    two = torch.arange(2) % len(data.train_labels)  # the first image twice in a training set of one
    x, _ = next(iter(TensorLoader(data.train_images[two], data.train_labels[two], 2, data.mean, data.std, device=device)))
    y = torch.tensor([0, data.num_classes - 1], device=device)
    parts = ", ".join(label(g, choices) for g in ("model", "signal", "loss", "propagator"))
    where = f"{parts} on dataset {data.name} {data.input_shape} with {data.num_classes} classes"
    try:
        with blame(f"the network does not fit ({where})"):
            step.eval()
            step.eval_step(x, y)
    finally:
        step.monitor.reset()


def check_batch_statistics(step: TrainStep, data: ImageData, batch_size: int, test_batch_size: int, choices: Mapping[str, str]) -> None:
    """Batch normalisation computes statistics over a batch, which needs at least 2 samples: refuse batch
    sizes (and subsets) that would give a batch of one. (A last batch of one sample is merged into the batch
    before it by ``TensorLoader``; this is for batches that are all single samples.)"""
    norms = [m for m in step.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    at_test = any(not m.track_running_stats for m in norms)  # batch statistics in evaluation too
    where = f"{label('model', choices)} normalises with batch statistics, which need at least 2 samples per batch"
    for setting, size, applies in (
        ("batch_size", batch_size, True),
        ("dataset.train_subset", len(data.train_labels), True),
        ("test_batch_size", test_batch_size, at_test),
        ("dataset.test_subset", len(data.test_labels), at_test),
        ("dataset.val_size", len(data.val_labels) if data.val_labels is not None else 2, at_test),
    ):
        if applies and size < 2:
            raise ConfigError(f"{setting}={size}: {where} (use at least 2, or model.norm=instance or none)")

