"""The parts of one training job that ``train.py`` builds, one call each: a config group, the data, the
loaders, a resumed run's state, the trackers; and ``Job``, which holds them for the epoch loop."""
from __future__ import annotations

import functools
import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..data.datasets import ImageData
from ..data.loader import TensorLoader
from ..propagators import global_parameters, local_parameters
from ..tracking import JsonlTracker, Tracker, Trackers
from . import checkpoint, rundir
from .checks import blame, label, load_checkpoint
from ..utils import one_line
from .config import ConfigError, check_resume, checkpoint_path, resolve_device, run_config
from .parallel import DataParallel
from .pipeline import Pipeline
from .step import Batches, TrainStep

log = logging.getLogger(__name__)


def build_group(cfg: DictConfig, group: str, choices: Mapping[str, str], **runtime: Any) -> Any:
    """``hydra.utils.instantiate`` of one config group (``None`` for an empty option such as ``scheduler=none``);
    called with ``runtime`` arguments when given (a partial group, e.g. the network with the data's shape).
    Any failure is a one-line ``ConfigError`` naming the group."""
    node = cfg.get(group)
    if node is None or (isinstance(node, DictConfig) and "_target_" not in node):
        return None
    with blame(label(group, choices)):
        # Plain lists and dicts, not OmegaConf's: an optimizer keeps its ``betas`` in its state, and a checkpoint
        # holding a ListConfig cannot be read back with weights_only=True (torch before 2.6 does not convert it).
        made = hydra.utils.instantiate(node, _convert_="all")
        return made(**runtime) if runtime else made


def value(setting: Any) -> Any:
    """A setting's plain value (the schema's enums, e.g. ``Mode.fused``, as ``"fused"``)."""
    return getattr(setting, "value", setting)


def resumed_state(cfg: DictConfig, writes: bool) -> dict[str, Any] | None:
    """The checkpoint ``resume`` names, checked against this run's settings (``None`` without ``resume``).
    Removes the half-written ``*.part`` files a killed run left beside it (by the process that writes)."""
    if cfg.resume is None:
        return None
    for part in rundir.remove_parts(checkpoint_path(cfg.resume).parent) if writes else []:
        log.info("removed %s, left half-written by an earlier run", part)
    saved = load_checkpoint(cfg.resume)
    check_resume(cfg.resume, saved["config"], run_config(cfg))
    return saved


def set_up_process(cfg: DictConfig, threads: int | None, parallel: DataParallel | Pipeline | None) -> torch.device:
    """This process's device (its own GPU under torchrun), torch threads, and every random source seeded."""
    device = resolve_device(cfg.device)
    if parallel is not None:
        device = parallel.device(device)
    threads = cfg.threads if cfg.threads is not None else threads
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)
    return device


def load_data(dataset: Any) -> ImageData:
    """``dataset.load()``; a missing or unreadable dataset is a ``ConfigError`` (its message says where the files go)."""
    try:
        return dataset.load()
    except (OSError, ValueError, RuntimeError) as err:
        raise ConfigError(one_line(err)) from err


@dataclass
class Loaders:
    """The batches of every phase: training (shuffled and augmented with ``generator``), validation, test."""

    train: Batches
    test: Batches
    val: Batches | None
    generator: torch.Generator


def make_loaders(cfg: DictConfig, data: ImageData, device: torch.device) -> Loaders:
    """``TensorLoader``s over ``data`` with the run's batch sizes; the training order drawn from ``seed``."""
    generator = torch.Generator().manual_seed(cfg.seed)
    train = TensorLoader(
        data.train_images, data.train_labels, cfg.batch_size, data.mean, data.std,
        shuffle=True, augment=data.augment, device=device, generator=generator,
    )
    test = TensorLoader(data.test_images, data.test_labels, cfg.test_batch_size, data.mean, data.std, device=device)
    val = None
    if data.val_images is not None and data.val_labels is not None:
        val = TensorLoader(data.val_images, data.val_labels, cfg.test_batch_size, data.mean, data.std, device=device)
    return Loaders(train, test, val, generator)


def restore(saved: dict[str, Any] | None, cfg: DictConfig, step: TrainStep, generator: torch.Generator) -> tuple[int, list[dict[str, float]]]:
    """A resumed run's completed epochs and metrics, its weights, optimizer and random state loaded into ``step``
    and ``generator``; ``(0, [])`` for a new run."""
    if saved is None:
        return 0, []
    with blame(f"resume={cfg.resume}: the checkpoint's weights do not fit this network"):
        start_epoch, history = checkpoint.restore(saved, step, generator)
    if start_epoch >= cfg.epochs:
        raise ConfigError(f"resume={cfg.resume}: the checkpoint has {start_epoch} epochs already, epochs={cfg.epochs}")
    log.info("resuming from %s after epoch %d", checkpoint_path(cfg.resume), start_epoch)
    return start_epoch, history


def make_tracker(logger: functools.partial | None, info: rundir.RunInfo) -> Tracker:
    """``metrics.jsonl`` always, plus the configured logger (given the run's folder, name and group unless set)."""
    trackers: list[Tracker] = []
    if logger is not None:
        runtime = {"run_dir": info.run_dir, "name": info.name, "group": info.group, "sweep": info.sweep}
        with blame("logger"):
            trackers.append(logger(**{k: v for k, v in runtime.items() if logger.keywords.get(k) is None}))
    # Last, so that a logger failing to start (e.g. a W&B server error) leaves no empty metrics.jsonl behind.
    trackers.append(JsonlTracker(info.run_dir))
    return Trackers(trackers)


def tracker_config(cfg: DictConfig, choices: Mapping[str, str], world_size: int = 1) -> dict[str, Any]:
    """What the trackers record as the run's config: every setting resolved, the group choices, the method and
    the number of processes that train the run (``world_size``: torchrun's, else 1)."""
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return {**resolved, "choices": dict(choices), "method": rundir.method_of(choices), "world_size": world_size}  # type: ignore[dict-item]


def show_progress(cfg: DictConfig) -> bool:
    """Per-epoch progress bars: ``progress=auto`` shows them only when stderr is a terminal."""
    return sys.stderr.isatty() if cfg.progress == "auto" else bool(cfg.progress)


@dataclass
class Job:
    """Everything one training run needs, checked and built; nothing written yet."""

    cfg: DictConfig
    config: dict[str, Any]  # the composed config, as checkpoints store it (config.run_config)
    device: torch.device
    data: ImageData
    step: TrainStep
    loaders: Loaders
    tracker: Tracker
    run_dir: Path
    choices: dict[str, str]
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    parallel: DataParallel | Pipeline | None = None  # one of several processes started by torchrun

    @property
    def world_size(self) -> int:
        """How many processes train this one run: torchrun's world size, else 1."""
        return self.parallel.world_size if self.parallel is not None else 1

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
        each = " per process" if self.parallel is not None else ""
        threads = f" ({n} thread{'s' if n > 1 else ''}{each})" if self.device.type == "cpu" else ""
        if self.parallel is not None:
            if isinstance(self.parallel, Pipeline):
                replicas = f" × {self.parallel.replicas} replicas" if self.parallel.replicas > 1 else ""
                threads += f" in {self.parallel.stages} pipeline stages{replicas} under torchrun"
            else:
                threads += f" in {self.parallel.world_size} processes under torchrun"
        what = ", ".join(label(g, self.choices) for g in ("model", "propagator"))
        data = self.data
        shape = "x".join(map(str, data.input_shape))
        val = f"{len(data.val_labels):,} validation / " if data.val_labels is not None else ""
        return (
            f"start: {what}, step.mode={value(self.cfg.step.mode)} on {self.device}{threads}: {total:,} parameters "
            f"({local:,} local, {total - local:,} global); {data.name}: {len(data.train_labels):,} train / {val}"
            f"{len(data.test_labels):,} test images {shape}, {data.num_classes} classes; run folder {self.run_dir}"
        )
