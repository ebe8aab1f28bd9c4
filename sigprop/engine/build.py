"""From a composed config to the objects of a run: check every setting, then build the data, the
assembled model and its training step, the loaders and the trackers.

Everything that can be wrong in a config is found here and reported as a ``ConfigError``: one line
that names the setting, raised before the run writes anything. Hydra checks the types while it
composes the config (``config.py``); ``ConfigCheck`` runs the checks that need no data as a Hydra
callback, before Hydra creates the run's folder (and for every job of a sweep before the first one
starts); ``prepare`` repeats them and adds the ones that need the data: building the network for the
dataset's shape and one small forward pass through it.
"""
from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import random
import sys
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import hydra
import numpy as np
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..data.datasets import ImageData
from ..data.loader import TensorLoader
from ..loss import needs_per_class_signal
from ..propagators import global_parameters, local_parameters
from ..tracking import JsonlTracker, Tracker, Trackers
from ..tracking.jsonl import METRICS_FILE, SUMMARY_FILE
from . import checkpoint, rundir
from .assemble import assemble, propagator_class
from .config import ConfigError, check_resume, check_settings, checkpoint_path, one_line, resolve_device, run_config
from .parallel import DataParallel, data_parallel, job_threads, torchrun_world
from .loop import Batches
from .step import TrainStep
from .sweeps import sweep_jobs

log = logging.getLogger(__name__)

# The config groups of conf/, in the order a run builds them.
GROUPS = ("dataset", "model", "signal", "loss", "optimizer", "scheduler", "propagator", "logger")


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
    signal: functools.partial
    loss: Any
    optimizer: functools.partial
    scheduler: functools.partial | None
    propagator: functools.partial
    logger: functools.partial | None


def build_parts(cfg: DictConfig, choices: Mapping[str, str]) -> Parts:
    """Instantiate every group and try the optimizer and scheduler on a dummy parameter (their settings
    are otherwise only checked when the first layer is built)."""
    made = {group: instantiate_group(cfg, group, choices) for group in GROUPS}
    for group in ("dataset", "model", "signal", "optimizer", "propagator"):
        if made[group] is None:
            raise ConfigError(f"{group}: choose an option (conf/{group}/)")
    for group in ("model", "signal", "optimizer", "propagator", "scheduler", "logger"):
        if made[group] is not None:
            _check_partial(made[group], group, choices)
    with blame(label("propagator", choices)):
        hidden_cls = propagator_class(made["propagator"])
    dummy = torch.nn.Parameter(torch.zeros(1))
    with blame(label("optimizer", choices)):
        optimizer = made["optimizer"]([dummy])
    if made["scheduler"] is not None:
        check_scheduler(made["scheduler"], optimizer, cfg.epochs, choices)
    if made["logger"] is not None:
        with blame(label("logger", choices)):
            made["logger"](run_dir=Path("."))
    per_class = bool(made["signal"].keywords.get("per_class", False))
    if hidden_cls.trained_by == "local" and needs_per_class_signal(made["loss"]) and not per_class:
        raise ConfigError(f"{label('loss', choices)} needs one signal row per class: add signal.per_class=true")
    return Parts(**made)


def check_scheduler(scheduler: functools.partial, optimizer: torch.optim.Optimizer, epochs: int, choices: Mapping[str, str]) -> None:
    """The schedule's settings, and the schedule run for ``epochs`` epochs on ``optimizer`` (a dummy): a bad value
    fails here, not at the first milestone. ``milestones`` must be epochs (whole numbers from 1), ``gamma`` a
    positive number (``MultiStepLR`` would take ``milestones=abc`` as three milestones that never come)."""
    settings = scheduler.keywords
    if "milestones" in settings:
        milestones = settings["milestones"]
        if (
            isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence)
            or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones)
        ):
            raise ConfigError(f"scheduler.milestones={_plain(milestones)}: must be a list of epochs (whole numbers from 1), e.g. [10,15]")
    if "gamma" in settings:
        gamma = settings["gamma"]
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < math.inf:
            raise ConfigError(f"scheduler.gamma={_plain(gamma)}: must be a positive number (the factor at each milestone)")
    with blame(label("scheduler", choices)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": this optimizer never steps
        schedule = scheduler(optimizer)
        for _ in range(epochs):
            schedule.step()


def _plain(value: Any) -> str:
    return str(OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value).replace(" ", "")


def check_config(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> None:
    """Every check that needs no data: settings, every group instantiated, and a resumed run's settings
    against its checkpoint's."""
    check_settings(cfg)
    check_data_parallel(cfg)
    build_parts(cfg, choices_of(cfg) if choices is None else choices)
    if cfg.resume is not None:
        check_resume(cfg.resume, load_checkpoint(cfg.resume)["config"], run_config(cfg))


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


def build_step(cfg: DictConfig, parts: Parts, data: ImageData, choices: Mapping[str, str]) -> TrainStep:
    """The network for ``data``'s shape and classes, assembled with the configured signal, propagator and
    loss (``assemble.py``), and its training step with the ``step.*`` settings (``step.py``)."""
    with blame(label("model", choices)):
        network = parts.model(input_shape=data.input_shape, num_classes=data.num_classes)
    parts_used = ", ".join(label(g, choices) for g in ("model", "signal", "loss", "propagator"))
    with blame(f"the network does not fit ({parts_used} on dataset {data.name} {data.input_shape})"):
        assembly = assemble(
            network, parts.signal, parts.propagator, parts.loss, parts.optimizer,
            mode=_value(cfg.step.mode), recompute_chunk=cfg.step.recompute_chunk,
            fuse_ht=cfg.step.fuse_ht,
        )
    with blame("step"):
        return TrainStep(
            assembly, parts.scheduler, precision=_value(cfg.step.precision),
            channels_last=cfg.step.channels_last, compile=cfg.step.compile,
        )


def _value(setting: Any) -> Any:
    """A setting's plain value (the schema's enums, e.g. ``Mode.fused``, as ``"fused"``)."""
    return getattr(setting, "value", setting)


def check_forward(step: TrainStep, data: ImageData, device: torch.device, choices: Mapping[str, str]) -> None:
    """One evaluation pass over two samples (labels 0 and the last class), so a signal or network that does
    not fit the data fails here, before any file is written, instead of in the first step."""
    x, _ = next(iter(TensorLoader(data.train_images[:2], data.train_labels[:2], 2, data.mean, data.std, device=device)))
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
    ):
        if applies and size < 2:
            raise ConfigError(f"{setting}={size}: {where} (use at least 2, or model.norm=instance or none)")


@dataclass
class RunInfo:
    """Where a run writes and what trackers call it: its name, the group of runs that differ from it only
    in their seed, and the sweep it belongs to."""

    run_dir: Path
    name: str | None = None
    group: str | None = None
    choices: dict[str, str] = field(default_factory=dict)
    sweep: str | None = None
    threads: int | None = None  # torch threads when ``threads`` is null: this job's share of a machine (parallel.py)


def method_of(choices: Mapping[str, str]) -> str:
    """What trains the hidden layers, as tables and dashboards call it: ``sigprop`` (``propagator=loss``),
    else the propagator's option (``backprop``, ``fixed``)."""
    propagator = choices.get("propagator", "loss")
    return "sigprop" if propagator == "loss" else propagator


def seedless_name(overrides: list[str], exclude_keys: list[str]) -> str:
    """A run's name (its overrides, sorted, without those in ``exclude_keys``, as Hydra's ``override_dirname``)
    without its seed; ``default`` when nothing else is left."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    kept = sorted(str(o.input_line) for o in parsed if o.key_or_group not in {*exclude_keys, "seed"})
    return ",".join(kept) or "default"


def hydra_run_info() -> RunInfo:
    """The running Hydra job's folder, name (its overrides), group (its overrides without the seed), group
    choices, sweep id (multiruns only) and its share of the machine's threads (``parallel.job_threads``)."""
    hc = HydraConfig.get()
    sweep = None
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hc.sweep.dir)
        sweep = f"{sweep_dir.parent.name}_{sweep_dir.name}"  # e.g. 2024-05-01_12-00-00 for multirun/2024-05-01/12-00-00
    group = seedless_name(list(hc.overrides.task), list(hc.job.config.override_dirname.exclude_keys))
    threads = job_threads(hc.launcher) if hc.mode == RunMode.MULTIRUN else None
    return RunInfo(Path(hc.runtime.output_dir), hc.job.override_dirname or None, group, choices_of(), sweep, threads)


@dataclass
class Job:
    """Everything one training run needs, checked and built; nothing written yet."""

    cfg: DictConfig
    config: dict[str, Any]  # the composed config, as checkpoints store it (config.run_config)
    device: torch.device
    data: ImageData
    step: TrainStep
    train_loader: Batches
    test_loader: Batches
    generator: torch.Generator
    tracker: Tracker
    tracker_config: dict[str, Any]
    run_dir: Path
    progress: bool
    choices: dict[str, str]
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    val_loader: Batches | None = None  # the validation split (dataset.val_size), if any
    parallel: DataParallel | None = None  # one of several processes started by torchrun

    @property
    def writes(self) -> bool:
        """Whether this process writes the run's files (checkpoint; the tracker is empty on the others)."""
        return self.parallel is None or self.parallel.writes

    def describe(self) -> str:
        """The run's start line: what trains on which device, its parameters, the data and where it writes."""
        model = self.step.model
        local = sum(p.numel() for p in local_parameters(model))
        total = local + sum(p.numel() for p in global_parameters(model))
        n = torch.get_num_threads()
        threads = f" ({n} thread{'s' if n > 1 else ''})" if self.device.type == "cpu" else ""
        what = ", ".join(label(g, self.choices) for g in ("model", "propagator"))
        data = self.data
        shape = "x".join(map(str, data.input_shape))
        val = f"{len(data.val_labels):,} validation / " if data.val_labels is not None else ""
        return (
            f"start: {what}, step.mode={_value(self.cfg.step.mode)} on {self.device}{threads}: {total:,} parameters "
            f"({local:,} local, {total - local:,} global); {data.name}: {len(data.train_labels):,} train / {val}"
            f"{len(data.test_labels):,} test images {shape}, {data.num_classes} classes; run folder {self.run_dir}"
        )


def make_tracker(logger: functools.partial | None, info: RunInfo) -> Tracker:
    """``metrics.jsonl`` always, plus the configured logger (given the run's folder, name and group unless set)."""
    trackers: list[Tracker] = []
    if logger is not None:
        runtime = {"run_dir": info.run_dir, "name": info.name, "group": info.group, "sweep": info.sweep}
        trackers.append(logger(**{k: v for k, v in runtime.items() if logger.keywords.get(k) is None}))
    # Last, so that a logger failing to start (e.g. a W&B server error) leaves no empty metrics.jsonl behind.
    trackers.append(JsonlTracker(info.run_dir))
    return Trackers(trackers)


def prepare(cfg: DictConfig, info: RunInfo) -> Job:
    """Check ``cfg`` and build the run it describes (resuming from ``resume`` if set); writes nothing (but for
    removing the half-written ``*.part`` files a killed run left beside the checkpoint it resumes from).

    Raises ``ConfigError`` for anything that would stop the run: a bad setting, missing data, a network
    that does not fit the data, a checkpoint that is unreadable, was written with other settings or does
    not fit the network, or a run folder that already holds a run.
    """
    choices = info.choices
    check_settings(cfg)
    parallel = check_data_parallel(cfg)
    parts = build_parts(cfg, choices)
    writes = parallel is None or parallel.writes
    if writes:  # the other ranks of a torchrun run share rank 0's folder
        check_new_run_dir(info.run_dir)
    config = run_config(cfg)
    saved = None
    if cfg.resume is not None:
        for part in rundir.remove_parts(checkpoint_path(cfg.resume).parent) if writes else []:
            log.info("removed %s, left half-written by an earlier run", part)
        saved = load_checkpoint(cfg.resume)
        check_resume(cfg.resume, saved["config"], config)
    device = resolve_device(cfg.device)
    if parallel is not None:
        device = parallel.device(device)
    threads = cfg.threads if cfg.threads is not None else info.threads
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(cfg.seed)
    data = load_data(parts.dataset)
    step = build_step(cfg, parts, data, choices)
    step.model.to(device)
    check_forward(step, data, device, choices)
    check_batch_statistics(step, data, cfg.batch_size, cfg.test_batch_size, choices)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader = TensorLoader(
        data.train_images, data.train_labels, cfg.batch_size, data.mean, data.std,
        shuffle=True, augment=data.augment, device=device, generator=generator,
    )
    test_loader = TensorLoader(data.test_images, data.test_labels, cfg.test_batch_size, data.mean, data.std, device=device)
    val_loader = None
    if data.val_images is not None and data.val_labels is not None:
        val_loader = TensorLoader(data.val_images, data.val_labels, cfg.test_batch_size, data.mean, data.std, device=device)
    start_epoch, history = 0, []
    if saved is not None:
        with blame(f"resume={cfg.resume}: the checkpoint's weights do not fit this network"):
            start_epoch, history = checkpoint.restore(saved, step, generator)
        if start_epoch >= cfg.epochs:
            raise ConfigError(f"resume={cfg.resume}: the checkpoint has {start_epoch} epochs already, epochs={cfg.epochs}")
        log.info("resuming from %s after epoch %d", checkpoint_path(cfg.resume), start_epoch)
    loaders = (train_loader, test_loader, val_loader)
    if parallel is not None:
        parallel.broadcast_model(step.model)
        parallel.attach(step.optimizers)
        loaders = tuple(parallel.shard(loader) if loader is not None else None for loader in loaders)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    tracker_config = {**resolved, "choices": dict(choices), "method": method_of(choices)}  # type: ignore[dict-item]
    progress = sys.stderr.isatty() if cfg.progress == "auto" else bool(cfg.progress)
    tracker = make_tracker(parts.logger, info) if writes else Trackers([])
    return Job(
        cfg, config, device, data, step, loaders[0], loaders[1], generator, tracker,
        tracker_config, info.run_dir, progress and writes, dict(choices), start_epoch, history, val_loader=loaders[2],
        parallel=parallel,
    )


def job_record(run_dir: Path) -> tuple[str, str]:
    """``(status, reason)`` of the run in ``run_dir`` as its ``summary.json`` records it (``failed`` without one)."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        return str(summary.get("status", "failed")), str(summary.get("reason", ""))
    except (OSError, ValueError):
        return "failed", f"no readable {SUMMARY_FILE}"


def started_jobs(sweep_dir: Path, output_subdir: str = ".hydra") -> list[tuple[int, list[str], Path]]:
    """``(job number, overrides, run folder)`` of every job of the sweep in ``sweep_dir`` that started (Hydra
    wrote its ``<output_subdir>/hydra.yaml``), by job number."""
    jobs = []
    for path in sweep_dir.glob(f"**/{output_subdir}/hydra.yaml"):
        node = OmegaConf.load(path).hydra
        jobs.append((int(node.job.num), list(node.overrides.task), path.parents[len(Path(output_subdir).parts)]))
    return sorted(jobs, key=lambda job: job[0])


class ConfigCheck(Callback):
    """Hydra callback: ``check_config`` before a run's folder is created, and for every job of a sweep
    before the first job starts (so a bad value in a sweep stops it before any training); then the run's
    folder (a sweep's folder) is claimed (``rundir.claim``) before Hydra writes anything there. After a
    sweep, the jobs whose record does not say ``finished`` are listed in one line, exit status 1.

    Hydra turns exceptions raised by callbacks into warnings and carries on, so a failed check
    exits here with the one-line message (``SystemExit``, status 1).
    """

    def __init__(self) -> None:
        self.jobs = 0
        self.failed: list[str] = []

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir)
        try:
            check_config(config)
            world = torchrun_world()
            if world is not None and world[0] != 0:
                return  # a torchrun run: rank 0 claims the folder all ranks share
            # Before Hydra writes its .hydra/ files there: an earlier run's folder stays untouched.
            check_new_run_dir(run_dir)
            rundir.claim(run_dir)
        except (ConfigError, HydraException, OmegaConfBaseException) as err:
            raise SystemExit(f"error: {one_line(err)}") from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        earlier = next(sweep_dir.glob(f"*/{METRICS_FILE}"), None) if sweep_dir.is_dir() else None
        if earlier is not None:
            raise SystemExit(
                f"error: {sweep_dir} already holds a sweep ({earlier}): give the new sweep its own folder (hydra.sweep.dir)"
            )
        loader = GlobalHydra.instance().config_loader()
        try:
            jobs = sweep_jobs(config, OverridesParser.create(config_loader=loader))
        except (ValueError, HydraException) as err:
            raise SystemExit(f"error: {one_line(err)}") from None
        for overrides in jobs:
            try:
                check_config(loader.load_sweep_config(config, overrides))
            except (ConfigError, HydraException, OmegaConfBaseException) as err:
                raise SystemExit(f"error: {one_line(err)} (in the sweep's job {' '.join(overrides)})") from None
        try:
            rundir.claim(sweep_dir, "hydra.sweep.dir")
        except ConfigError as err:
            raise SystemExit(f"error: {err}") from None

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        self.jobs += 1
        status, reason = job_record(Path(config.hydra.runtime.output_dir))
        if job_return.status == JobStatus.FAILED:  # an error Hydra caught: the job's record could not say so
            status, reason = "failed", one_line(job_return._return_value)
        self._record(config.hydra.job.num, job_return.overrides or [], status, reason)

    def _record(self, num: int, overrides: Sequence[str], status: str, reason: str) -> None:
        if status != "finished":
            self.failed.append(f"job {num} ({' '.join(overrides)}) {status}" + (f": {reason}" if reason else ""))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.jobs == 0 and config.hydra.output_subdir is not None:
            # The launcher ran the jobs in other processes (joblib, submitit), where on_job_end counted them:
            # read each started job's record from its folder instead.
            for num, overrides, run_dir in started_jobs(Path(config.hydra.sweep.dir), config.hydra.output_subdir):
                self.jobs += 1
                self._record(num, overrides, *job_record(run_dir))
        if self.failed:
            raise SystemExit(f"error: {len(self.failed)} of {self.jobs} jobs did not finish: {'; '.join(self.failed)}")
