"""From a composed Hydra config to the objects of a run: check every setting, then build data, learner,
loaders and trackers.

Everything that can be wrong in a config is found here and reported as a ``ConfigError``: one line
that names the setting, raised before the run writes anything. ``ConfigCheck`` runs the checks that
need no data as a Hydra callback, before Hydra creates the run's folder (and for every job of a
sweep before the first one starts); ``prepare`` repeats them and adds the ones that need the data:
building the network for the dataset's shape and one small forward pass through it.
"""
from __future__ import annotations

import functools
import inspect
import logging
import random
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..data.datasets import ImageData
from ..data.loader import TensorLoader
from ..loss import needs_per_class_signal
from ..managers import accepted_kwargs
from ..tracking import JsonlTracker, Tracker, Trackers
from ..tracking.jsonl import METRICS_FILE
from . import checkpoint
from .learners import Learner

log = logging.getLogger(__name__)

# The config groups of conf/, in the order a run builds them.
GROUPS = ("dataset", "model", "signal", "loss", "optimizer", "scheduler", "propagator", "logger")
PROGRESS = ("auto", True, False)


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line that names it."""


@dataclass
class Settings:
    """The top-level settings of ``conf/config.yaml``, with their types."""

    seed: int = 0
    epochs: int = 20
    batch_size: int = 128
    test_batch_size: int = 1000
    device: str = "auto"
    data_dir: str = "data"
    resume: Optional[str] = None
    progress: Any = "auto"
    refresh_every: int = 20
    threads: Optional[int] = None


def one_line(err: BaseException) -> str:
    """An exception's message on one line (Hydra's and torch's span several)."""
    text = str(err).split("Config search path:")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) or type(err).__name__


def read_settings(cfg: DictConfig) -> Settings:
    """The top-level settings, type-checked and range-checked."""
    values = {}
    for f in fields(Settings):
        if f.name not in cfg:
            raise ConfigError(f"{f.name}: missing from the config (conf/config.yaml defines it)")
        try:
            values[f.name] = OmegaConf.select(cfg, f.name)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{f.name}: {one_line(err)}") from None
    try:
        typed = OmegaConf.merge(OmegaConf.structured(Settings), values)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or "config"
        message = str(getattr(err, "msg", "") or err).splitlines()[0]
        raise ConfigError(f"{key}={values.get(key)!r}: {message}") from None
    settings = Settings(**OmegaConf.to_container(typed))  # type: ignore[arg-type]
    for key in ("epochs", "batch_size", "test_batch_size", "refresh_every"):
        if getattr(settings, key) < 1:
            raise ConfigError(f"{key}={getattr(settings, key)}: must be at least 1")
    if settings.threads is not None and settings.threads < 1:
        raise ConfigError(f"threads={settings.threads}: must be at least 1, or null for torch's default")
    if settings.progress not in PROGRESS:
        raise ConfigError(f"progress={settings.progress!r}: must be auto, true or false")
    resolve_device(settings.device)
    if settings.resume is not None:
        checkpoint_path(settings.resume)
    return settings


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r}: must be auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name}: torch finds no CUDA device here; use device=cpu or device=auto")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r}: must be auto, cpu, cuda or cuda:N")
    return device


def checkpoint_path(resume: str) -> Path:
    """The checkpoint file ``resume`` names: the file itself, or a run folder holding ``checkpoint.pt``."""
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / checkpoint.CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file")
    return path


def choices_of(cfg: DictConfig | None = None) -> dict[str, str]:
    """The option chosen in every config group (``{"loss": "v15", ...}``), from Hydra's runtime record
    (in ``cfg`` if it holds the ``hydra`` node, else of the running job)."""
    if cfg is not None and "hydra" in cfg:
        node = cfg.hydra.runtime.choices
    elif HydraConfig.initialized():
        node = HydraConfig.get().runtime.choices
    else:
        return {}
    return {k: str(v) for k, v in node.items() if not k.startswith("hydra/") and v is not None}


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


def instantiate_group(cfg: DictConfig, group: str, choices: Mapping[str, str]) -> Any:
    """``hydra.utils.instantiate`` of one group's config (``None`` for an empty option such as ``scheduler=none``)."""
    node = cfg.get(group)
    if node is None or (isinstance(node, DictConfig) and "_target_" not in node):
        if node:  # a non-empty option without a target is a mistake, not "none"
            raise ConfigError(f"{label(group, choices)}: the config has no _target_")
        return None
    with blame(label(group, choices)):
        return hydra.utils.instantiate(node)


def _check_partial(made: Any, group: str, choices: Mapping[str, str]) -> None:
    """A group that is called with runtime inputs must be a partial whose settings its target accepts."""
    if not isinstance(made, functools.partial):
        raise ConfigError(f"{label(group, choices)}: needs _partial_: true (it is called with runtime inputs)")
    with blame(label(group, choices)):
        inspect.signature(made.func).bind_partial(*made.args, **made.keywords)


@dataclass
class Parts:
    """The configured objects that need no data: factories for the rest."""

    dataset: Any
    model: functools.partial
    signal: Any
    loss: Any
    optimizer: functools.partial
    scheduler: functools.partial | None
    propagator: functools.partial
    logger: functools.partial | None


def build_parts(cfg: DictConfig, choices: Mapping[str, str]) -> Parts:
    """Instantiate every group and try the optimizer and scheduler on a dummy parameter (their settings
    are otherwise only checked when the first layer is built)."""
    made = {group: instantiate_group(cfg, group, choices) for group in GROUPS}
    for group in ("model", "optimizer", "propagator"):
        if made[group] is None:
            raise ConfigError(f"{group}: choose an option (conf/{group}/)")
        _check_partial(made[group], group, choices)
    for group in ("scheduler", "logger"):
        if made[group] is not None:
            _check_partial(made[group], group, choices)
    dummy = torch.nn.Parameter(torch.zeros(1))
    with blame(label("optimizer", choices)):
        optimizer = made["optimizer"]([dummy])
    if made["scheduler"] is not None:
        with blame(label("scheduler", choices)):
            made["scheduler"](optimizer)
    if made["logger"] is not None:
        with blame(label("logger", choices)):
            made["logger"](run_dir=Path("."))
    if made["dataset"] is None:
        raise ConfigError("dataset: choose an option (conf/dataset/)")
    uses_loss = "loss" in accepted_kwargs(made["propagator"].func, {"loss": None})
    if uses_loss and needs_per_class_signal(made["loss"]) and not getattr(made["signal"], "per_class", False):
        raise ConfigError(f"{label('loss', choices)} needs one signal row per class: add signal.per_class=true")
    return Parts(**made)


def check_config(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> Settings:
    """Every check that needs no data: settings, and every group instantiated."""
    choices = choices_of(cfg) if choices is None else choices
    settings = read_settings(cfg)
    build_parts(cfg, choices)
    return settings


def check_new_run_dir(run_dir: Path, setting: str = "hydra.run.dir") -> None:
    """A run never writes into a folder that holds another run's metrics or checkpoint."""
    for name in (METRICS_FILE, checkpoint.CHECKPOINT_FILE):
        if (run_dir / name).exists():
            raise ConfigError(f"{run_dir} already holds a run ({name}): give the new run its own folder ({setting})")


def seed_everything(seed: int) -> None:
    """Seed torch (every device), numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def load_data(dataset: Any) -> ImageData:
    """``dataset.load()``; a missing or unreadable dataset is a ``ConfigError`` (its message says where the files go)."""
    try:
        return dataset.load()
    except (OSError, ValueError, RuntimeError) as err:
        raise ConfigError(one_line(err)) from err


def build_learner(parts: Parts, data: ImageData, choices: Mapping[str, str]) -> Learner:
    """The network for ``data``'s shape and classes, wrapped by the configured propagator."""
    with blame(label("model", choices)):
        network = parts.model(input_shape=data.input_shape, num_classes=data.num_classes)
    inputs = dict(
        network=network, signal=parts.signal, loss=parts.loss, optimizer=parts.optimizer, scheduler=parts.scheduler
    )
    with blame(label("propagator", choices)):
        return parts.propagator(**accepted_kwargs(parts.propagator.func, inputs))


def check_forward(learner: Learner, data: ImageData, device: torch.device, choices: Mapping[str, str]) -> None:
    """One evaluation pass over two samples (labels 0 and the last class), so a signal or network that does
    not fit the data fails here, before any file is written, instead of in the first step."""
    x, _ = next(iter(TensorLoader(data.train_images[:2], data.train_labels[:2], 2, data.mean, data.std, device=device)))
    y = torch.tensor([0, data.num_classes - 1], device=device)
    parts = ", ".join(label(g, choices) for g in ("model", "signal", "loss", "propagator"))
    where = f"{parts} on dataset {data.name} {data.input_shape} with {data.num_classes} classes"
    try:
        with blame(f"the network does not fit ({where})"):
            learner.eval()
            learner.eval_step(x, y)
    finally:
        if learner.monitor is not None:
            learner.monitor.reset()


@dataclass
class RunInfo:
    """Where a run writes and what trackers call it."""

    run_dir: Path
    name: str | None = None
    group: str | None = None
    choices: dict[str, str] = field(default_factory=dict)


def hydra_run_info() -> RunInfo:
    """The running Hydra job's folder, name (its overrides), sweep group (multiruns only) and group choices."""
    hc = HydraConfig.get()
    group = None
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hc.sweep.dir)
        group = f"{sweep_dir.parent.name}_{sweep_dir.name}"  # e.g. 2024-05-01_12-00-00 for multirun/2024-05-01/12-00-00
    return RunInfo(Path(hc.runtime.output_dir), hc.job.override_dirname or None, group, choices_of())


@dataclass
class Job:
    """Everything one training run needs, checked and built; nothing written yet."""

    settings: Settings
    device: torch.device
    data: ImageData
    learner: Learner
    train_loader: TensorLoader
    test_loader: TensorLoader
    generator: torch.Generator
    tracker: Tracker
    tracker_config: dict[str, Any]
    run_dir: Path
    progress: bool
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def make_tracker(logger: functools.partial | None, info: RunInfo) -> Tracker:
    """``metrics.jsonl`` always, plus the configured logger (given the run's folder, name and group unless set)."""
    trackers: list[Tracker] = []
    if logger is not None:
        runtime = {"run_dir": info.run_dir, "name": info.name, "group": info.group}
        trackers.append(logger(**{k: v for k, v in runtime.items() if logger.keywords.get(k) is None}))
    # Last, so that a logger failing to start (e.g. a W&B server error) leaves no empty metrics.jsonl behind.
    trackers.append(JsonlTracker(info.run_dir))
    return Trackers(trackers)


def prepare(cfg: DictConfig, info: RunInfo) -> Job:
    """Check ``cfg`` and build the run it describes (resuming from ``resume`` if set); writes nothing.

    Raises ``ConfigError`` for anything that would stop the run: a bad setting, missing data, a network
    that does not fit the data, a checkpoint that does not fit the network, or a run folder that already
    holds a run.
    """
    choices = info.choices
    settings = read_settings(cfg)
    parts = build_parts(cfg, choices)
    check_new_run_dir(info.run_dir)
    device = resolve_device(settings.device)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    seed_everything(settings.seed)
    data = load_data(parts.dataset)
    learner = build_learner(parts, data, choices)
    learner.model.to(device)
    check_forward(learner, data, device, choices)
    generator = torch.Generator().manual_seed(settings.seed)
    train_loader = TensorLoader(
        data.train_images, data.train_labels, settings.batch_size, data.mean, data.std,
        shuffle=True, augment=data.augment, device=device, generator=generator,
    )
    test_loader = TensorLoader(
        data.test_images, data.test_labels, settings.test_batch_size, data.mean, data.std, device=device
    )
    start_epoch, history = 0, []
    if settings.resume is not None:
        path = checkpoint_path(settings.resume)
        with blame(f"resume={settings.resume}: the checkpoint does not fit this configuration"):
            start_epoch, history = checkpoint.restore(checkpoint.load(path), learner, generator)
        if start_epoch >= settings.epochs:
            raise ConfigError(
                f"resume={settings.resume}: the checkpoint has {start_epoch} epochs already, epochs={settings.epochs}"
            )
        log.info("resuming from %s after epoch %d", path, start_epoch)
    tracker_config = {**OmegaConf.to_container(cfg, resolve=True), "choices": dict(choices)}  # type: ignore[dict-item]
    progress = sys.stderr.isatty() if settings.progress == "auto" else bool(settings.progress)
    return Job(
        settings, device, data, learner, train_loader, test_loader, generator,
        make_tracker(parts.logger, info), tracker_config, info.run_dir, progress, start_epoch, history,
    )


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Every job's overrides in a multirun of Hydra's basic sweeper ([] for other sweepers)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # the sweeper's own expansion rule
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if config.hydra.sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return []
    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(params + list(config.hydra.overrides.task))
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


class ConfigCheck(Callback):
    """Hydra callback: ``check_config`` before a run's folder is created, and for every job of a sweep
    before the first job starts (so a bad value in a sweep stops it before any training).

    Hydra turns exceptions raised by callbacks into warnings and carries on, so a failed check
    exits here with the one-line message (``SystemExit``, status 1).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_config(config)
            # Before Hydra writes its .hydra/ files there: an earlier run's folder stays untouched.
            check_new_run_dir(Path(config.hydra.run.dir))
        except (ConfigError, HydraException, OmegaConfBaseException) as err:
            raise SystemExit(f"error: {one_line(err)}") from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.global_hydra import GlobalHydra

        sweep_dir = Path(config.hydra.sweep.dir)
        earlier = next(sweep_dir.glob(f"*/{METRICS_FILE}"), None) if sweep_dir.is_dir() else None
        if earlier is not None:
            raise SystemExit(
                f"error: {sweep_dir} already holds a sweep ({earlier}): give the new sweep its own folder (hydra.sweep.dir)"
            )
        loader = GlobalHydra.instance().config_loader()
        for overrides in sweep_jobs(config):
            try:
                check_config(loader.load_sweep_config(config, overrides))
            except (ConfigError, HydraException, OmegaConfBaseException) as err:
                raise SystemExit(f"error: {one_line(err)} (in the sweep's job {' '.join(overrides)})") from None
