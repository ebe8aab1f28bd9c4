"""The training step: one batch through an assembled model, and every update that follows from it;
and a phase, every batch of a loader through the step, with every layer's metrics.

The settings of ``conf/config.yaml``'s ``step`` node live here and in ``assemble``: how the local
losses are applied (``mode``), precision, channels-last and ``torch.compile``. The same step
trains SigProp and the backpropagation baseline: with ``propagator=backprop`` there is no local
loss, and the one backward of the output loss reaches every layer.

Where a hidden layer learns: ``TrainStep.train_step`` calls the model (``models.Forward``), which
runs the signal and every wrapped layer; a ``propagators.Loss`` layer runs on its detached input
and on the signal (``Learn.forward``) and computes its local loss and update (``Loss.train_``),
both in ``sigprop/propagators/learn.py``.

Metrics are summed on the device during a phase and read once at its end (a read waits for the
device), so a phase adds no synchronisation per step; the progress bar, when shown, reads its
running values every ``refresh_every`` steps.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, ContextManager, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .. import propagators
from ..monitors.monitor import Group, LossAccuracySums, Monitor
from .assemble import Assembly

SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
PRECISIONS = ("fp32", "bf16")


def compile_modules(modules: list[nn.Module]) -> None:
    """``torch.compile`` each module in place (``nn.Module.compile``: state-dict keys unchanged).

    Dynamo keeps a bounded number of compiled versions per Python function (8 by default), and
    layers of one type share their ``forward``: past the bound the remaining layers would silently
    run uncompiled. Shapes are static (one version per layer and input shape: dynamic shapes shared
    across layers of different sizes gave wrong strides in compiled backward passes), and the bound
    is raised to a few versions per layer (training and evaluation, full and last batches).
    """
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, limit, max(getattr(config, limit), 4 * len(modules)))
    for module in modules:
        module.compile(dynamic=False)


class TrainStep:
    """An assembled model with its optimizers and schedules, trained and evaluated one batch at a time.

    In a training step the forward pass runs the signal and every hidden layer; each
    ``propagators.Loss`` computes its local loss there and, in ``layerwise``/``lowmem`` mode,
    steps its layer's optimizer at once. Then the output layer's cross-entropy is backpropagated
    through the output layer only (every hidden layer's output is detached), together with the
    collected local losses in ``fused`` mode, and one optimizer steps.

    Args:
        assembly: the model, its optimizers, monitor and (fused mode) local-loss collection.
        scheduler: builds a learning-rate schedule from an optimizer, or ``None``.
        precision: ``fp32``, or ``bf16`` (forward and losses under bfloat16 autocast; parameters,
            gradients and optimizer state stay fp32).
        channels_last: keep 4-D weights and inputs in channels-last memory order (faster
            convolutions on GPUs and with oneDNN).
        compile: ``torch.compile`` every layer in place.
    """

    def __init__(
        self,
        assembly: Assembly,
        scheduler: SchedulerFactory | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.model = assembly.model
        self.optimizers = assembly.optimizers
        self.monitor = assembly.monitor
        self.deferred = assembly.deferred
        self.precision = precision
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.schedulers = [scheduler(o) for o in self.optimizers] if scheduler is not None else []
        if compile:
            layers = (propagators.Learn, propagators.Identity)
            compile_modules([m.module for m in self.model.modules() if isinstance(m, layers)])

    def _autocast(self, x: Tensor) -> ContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _input(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One update from batch ``(x, y)``; returns the output layer's loss and logits, detached."""
        x = self._input(x)
        with self._autocast(x):
            logits = self.model(x, y).float()  # layerwise and lowmem: every hidden layer has stepped here
            loss = F.cross_entropy(logits, y)
        local = self.deferred.pop_sum() if self.deferred is not None else None
        self.update_output(loss if local is None else loss + local)
        return loss.detach(), logits.detach()

    def update_output(self, loss: Tensor) -> None:
        """Backpropagate ``loss`` (the output layer's, with fused mode's local losses) and step the last optimizer."""
        optimizer = self.optimizers[-1]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def eval_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Output loss and logits without updating (the hidden layers still measure their local losses)."""
        x = self._input(x)
        with self._autocast(x):
            logits = self.model(x, y).float()
        return F.cross_entropy(logits, y).detach(), logits.detach()

    def train(self, mode: bool = True) -> None:
        self.model.train(mode)

    def eval(self) -> None:
        self.model.eval()

    def epoch_end(self) -> None:
        """Advance the learning-rate schedules by one epoch."""
        for s in self.schedulers:
            s.step()

    def lr(self) -> float:
        """The current learning rate (every optimizer follows the same schedule)."""
        return float(self.optimizers[0].param_groups[0]["lr"])

    def run_phase(
        self,
        batches: Batches,
        phase: str,
        progress: bool = False,
        refresh_every: int = 20,
        desc: str = "",
        combine: Callable[[list[LossAccuracySums]], None] | None = None,
    ) -> Metrics:
        """One pass over ``batches``: training steps for ``phase="train"``, evaluation otherwise.

        Returns ``<phase>/loss``, ``<phase>/acc`` (output layer), ``<phase>/<layer>/loss|acc`` for every
        monitored layer (the signal included) and ``<phase>/samples_per_s``. ``combine``: called with every sum of
        the phase before they are read (a data-parallel run adds up its processes' sums there).
        """
        training = phase == "train"
        self.train(training)
        self.monitor.reset()
        update = self.train_step if training else self.eval_step
        meter = OutputMeter()
        num_batches = len(batches)
        bar = tqdm(total=num_batches, desc=desc or phase, unit="batch", leave=False, disable=not progress, dynamic_ncols=True)
        start = time.perf_counter()
        for i, (x, y) in enumerate(batches, 1):
            loss, logits = update(x, y)
            meter.add_batch(loss, logits, y)
            if progress and (i % refresh_every == 0 or i == num_batches):
                running = meter.values()  # the only reads of the device during a phase, and only with a bar
                bar.set_postfix(loss=f"{running['loss']:.4f}", acc=f"{running['acc']:.4f}", refresh=False)
            bar.update(1)
        if combine is not None:
            combine([meter, *sums_of(self.monitor)])
        output = meter.values()  # waits for the device, so the time below covers all the phase's work
        elapsed = time.perf_counter() - start
        bar.close()
        metrics: Metrics = {f"{phase}/loss": output["loss"], f"{phase}/acc": output["acc"]}
        for name, values in self.monitor.values().items():  # signal, layer01, ...: each local loss and accuracy
            for key, value in values.items():
                metrics[f"{phase}/{name}/{key}"] = value
        metrics[f"{phase}/samples_per_s"] = meter.count / elapsed if elapsed > 0 else math.nan
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["optimizers"]) != len(self.optimizers):
            raise ValueError(
                f"checkpoint has {len(state['optimizers'])} optimizers, this run builds {len(self.optimizers)}: "
                "it was written by a different model, propagator or step.mode"
            )
        self.model.load_state_dict(state["model"])
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state["schedulers"], strict=True):
            sch.load_state_dict(s)


# ----------------------------------------------------------------------------- a phase


Metrics = dict[str, float]


class Batches(Protocol):
    """What the loop iterates: ``(x, y)`` batches with a known count (e.g. ``sigprop.data.loader.TensorLoader``)."""

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...


class OutputMeter(LossAccuracySums):
    """The output layer's summed loss and correct predictions over one phase, kept on the device."""

    def add_batch(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        self.add(loss, (logits.argmax(1) == y).sum(), y.shape[0])


def sums_of(monitor: Monitor) -> list[LossAccuracySums]:
    """Every ``LossAccuracySums`` in ``monitor`` (a layer's metrics, or a group of them)."""
    if isinstance(monitor, LossAccuracySums):
        return [monitor]
    if isinstance(monitor, Group):
        return [s for m in monitor.monitors for s in sums_of(m)]
    return []
