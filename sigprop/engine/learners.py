"""Learners: one network, its optimizers and the training step, for SigProp and for backpropagation.

A learner hides how a method updates the network behind ``train_step``/``eval_step``,
so the training loop and the benchmark treat SigProp and backpropagation alike.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import monitors
from ..nets.assemble import sigprop_model
from ..nets.network import Network
from ..nets.signals import SignalChoice
from ..propagators.base import LocalLosses, LossFn, global_parameters, local_parameters

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]
MODES = ("fused", "layerwise")


class Learner:
    """A model with everything needed to train it one batch at a time."""

    model: nn.Module
    optimizers: list[torch.optim.Optimizer]
    schedulers: list[Any]
    monitor: monitors.Group | None = None

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
        logits = self.forward(x, y)
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
    """

    def __init__(self, network: Network, optimizer: OptimizerFactory, scheduler: SchedulerFactory | None = None) -> None:
        self.model = network.sequential()
        self.optimizers = [optimizer(self.model.parameters())]
        self._make_schedulers(scheduler)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x)

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(x)
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
            its graph (the reference's order; least memory). Both make the same updates.
        monitor: collect per-layer loss and accuracy.
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
        if self.deferred is not None:
            params = list(local_parameters(self.model)) + list(global_parameters(self.model))
            self.optimizers = [optimizer(params)]
        else:
            self.optimizers = layer_optimizers + [optimizer(self.model.parameters())]
        self._make_schedulers(scheduler)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x, y)

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model(x, y)  # layerwise mode: every hidden layer has already stepped here
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
