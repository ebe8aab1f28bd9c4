"""Learners: one network, its optimizers and the training step, for SigProp and for backpropagation.

A learner hides how a method updates the network behind ``train_step``/``eval_step``,
so the training loop and the benchmark treat SigProp and backpropagation alike.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import monitors
from ..nets.assemble import sigprop_model
from ..nets.network import Network
from ..nets.signals import SignalChoice
from ..propagators.base import LocalLearner, LocalLosses, LossFn, global_parameters, local_parameters
from ..propagators.learn import Learn, uses_batch_statistics
from ..propagators.learn import Loss as LossPropagator
from ..propagators.other import Identity

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
MODES = ("fused", "layerwise", "lowmem")
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


class Learner:
    """A model with everything needed to train it one batch at a time.

    Options shared by every learner (keyword arguments of the subclasses):
        precision: ``fp32``, or ``bf16`` (forward and losses under bfloat16 autocast; parameters,
            gradients and optimizer state stay fp32).
        channels_last: keep 4-D weights and inputs in channels-last memory order (faster
            convolutions on GPUs and with oneDNN).
        compile: ``torch.compile`` the layers in place (``nn.Module.compile``; state-dict keys unchanged).
    """

    model: nn.Module
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[Any]
    monitor: monitors.Group | None = None
    precision: str = "fp32"
    channels_last: bool = False

    def _set_options(self, precision: str, channels_last: bool) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _autocast(self, x: Tensor) -> ContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(x.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _input(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _make_schedulers(self, scheduler: SchedulerFactory | None) -> None:
        self.schedulers = [scheduler(o) for o in self.optimizers] if scheduler is not None else []

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One update from batch ``(x, y)``; returns the output layer's loss and logits, detached."""
        raise NotImplementedError

    @torch.no_grad()
    def eval_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Output loss and logits without updating (SigProp layers still measure their local losses)."""
        x = self._input(x)
        with self._autocast(x):
            logits = self.forward(x, y).float()
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
        return float(self.optimizers[0].param_groups[0]["lr"]) if self.optimizers else 0.0

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
                "it was written by a different model or propagator configuration"
            )
        self.model.load_state_dict(state["model"])
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)
        for sch, s in zip(self.schedulers, state["schedulers"]):
            sch.load_state_dict(s)


class BackpropLearner(Learner):
    """The same network trained end to end by backpropagation of the output cross-entropy.

    Args:
        network: the plain network.
        optimizer: builds the optimizer from parameters.
        scheduler: builds a learning-rate schedule from the optimizer, or ``None``.
        precision, channels_last, compile: see ``Learner``.
    """

    def __init__(
        self,
        network: Network,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.model = network.sequential()
        self._set_options(precision, channels_last)
        self.optimizers = [optimizer(self.model.parameters())]
        self._make_schedulers(scheduler)
        if compile:
            compile_modules([self.model])

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x)

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._input(x)
        with self._autocast(x):
            logits = self.model(x).float()
            loss = F.cross_entropy(logits, y)
        opt = self.optimizers[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), logits.detach()


class SigpropLearner(Learner):
    """A network trained by Signal Propagation: local losses for the signal and hidden layers,
    cross-entropy for the output layer only.

    Args:
        network: the plain network.
        signal: which signal to put in front.
        loss: the local loss.
        optimizer: builds an optimizer from parameters (per layer, or one for all in ``fused`` mode).
        scheduler: builds a learning-rate schedule from an optimizer, or ``None``.
        hidden: ``loss`` (hidden layers learn) or ``fixed`` (they stay at their initialisation).
        mode: ``fused`` sums the local losses and the output loss into one backward and takes one
            optimizer step over all layers (fast; keeps every layer's graph until then);
            ``layerwise`` steps each layer's own optimizer as soon as its loss is known and frees
            its graph (the reference's order); ``lowmem`` is ``layerwise`` where each layer's graph
            is also built only ``recompute_chunk`` samples at a time (one extra forward pass; see
            ``propagators.Loss``; layers with batch statistics or dropout run as ``layerwise``).
            All three make the same updates.
        monitor: collect per-layer loss and accuracy.
        fuse_ht: run ``h`` and ``t`` through each hidden layer in one call (``None``: wherever the
            layer has no batch statistics; see ``propagators.Learn``).
        precision, channels_last, compile: see ``Learner``.
        recompute_chunk: samples per recomputed slice in ``lowmem`` mode.
    """

    def __init__(
        self,
        network: Network,
        signal: SignalChoice,
        loss: LossFn,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        hidden: str = "loss",
        mode: str = "fused",
        monitor: bool = True,
        fuse_ht: bool | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        recompute_chunk: int = 8,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"sigprop mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.monitor = monitors.Group() if monitor else None
        self.deferred = LocalLosses() if mode == "fused" else None
        layer_optimizers: list[torch.optim.Optimizer] = []

        def build(module: nn.Module) -> torch.optim.Optimizer | None:
            params = [p for p in module.parameters() if p.requires_grad]
            if self.deferred is not None or not params:
                return None
            opt = optimizer(params)
            layer_optimizers.append(opt)
            return opt

        self.model = sigprop_model(network, signal, loss, build, hidden, self.monitor, self.deferred)
        for m in self.model.modules():
            if fuse_ht is not None and isinstance(m, Learn):
                m.fuse_ht = bool(fuse_ht) and not uses_batch_statistics(m.module)
            if signal.per_class and isinstance(m, LocalLearner):
                m.per_class_signal = True  # the losses index the K signal rows by class
            if mode == "lowmem" and isinstance(m, LossPropagator):
                m.recompute_chunk = int(recompute_chunk)
        self._set_options(precision, channels_last)
        if self.deferred is not None:
            params = list(local_parameters(self.model)) + list(global_parameters(self.model))
            self.optimizers = [optimizer(params)]
        else:
            self.optimizers = layer_optimizers + [optimizer(self.model.parameters())]
        self._make_schedulers(scheduler)
        if compile:
            compile_modules([m.module for m in self.model.modules() if isinstance(m, (Learn, Identity))])

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x, y)

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._input(x)
        with self._autocast(x):
            logits = self.forward(x, y).float()  # layerwise mode: every hidden layer has already stepped here
            loss = F.cross_entropy(logits, y)
        opt = self.optimizers[-1]
        if self.deferred is not None:
            local = self.deferred.pop_sum()
            total = loss if local is None else loss + local
        else:
            total = loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return loss.detach(), logits.detach()
