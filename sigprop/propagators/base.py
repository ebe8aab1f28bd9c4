"""The propagator base class, the collection of local losses for a fused step, and who trains which parameters."""
from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import Tensor, nn


LossFn = Callable[..., Tensor]


class Propagator(nn.Module):
    """Wraps one layer (or the signal) and routes ``(h, t, context)`` through it.

    ``trained_by`` says who updates the wrapped parameters: ``"global"`` (the user's
    optimizer, through ordinary backpropagation from the output loss), ``"local"``
    (the propagator itself, from its local loss) or ``"nobody"``.
    """

    trained_by: ClassVar[str] = "global"

    def __init__(self, module: nn.Module | None = None) -> None:
        super().__init__()
        if module is not None:  # a subclass may set ``self.module`` itself, as in the reference package
            self.module = module

    @classmethod
    def manage(cls, manager: Any, module: nn.Module, **kwargs: Any) -> "Propagator":
        """Wrap ``module`` in this class through ``manager.add_propagator`` (with the manager's defaults)."""
        return manager.add_propagator(module, cls, **kwargs)


class LocalLosses:
    """Collects the local losses of one training forward pass, to apply them with one backward and one step.

    Every layer's input is detached, so each local loss reaches only its own layer's
    parameters: the gradient of their sum equals each loss's gradient on its own
    layer, and one optimizer over all layers (with per-layer hyper-parameters equal)
    makes the same update as one optimizer per layer. Pass an instance as
    ``deferred=`` to ``propagators.Loss`` / ``propagators.signals.Loss``.
    """

    def __init__(self) -> None:
        self.losses: list[Tensor] = []

    def add(self, loss: Tensor) -> None:
        """Keep ``loss`` (with its graph) until ``pop_sum``."""
        self.losses.append(loss)

    def pop_sum(self) -> Tensor | None:
        """The sum of the collected losses (``None`` if there are none), in the widest of their
        precisions and at least float32; empties the collection."""
        if not self.losses:
            return None
        dtype = functools.reduce(torch.promote_types, (loss.dtype for loss in self.losses), torch.float32)
        total = torch.stack([loss.to(dtype) for loss in self.losses]).sum()
        self.losses.clear()
        return total

    def __len__(self) -> int:
        return len(self.losses)


def check_loss(loss: LossFn) -> LossFn:
    """``loss``, refused unless it can be called as ``loss(sp_learn, h1, t1, h0, t0, context)``."""
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(sp_learn, h1, t1, h0, t0, context), got {loss!r}")
    return loss


def refuse_learning_without_grad(propagator: nn.Module) -> None:
    """Refuse a training-mode pass with labels where no gradient can be computed.

    Under ``torch.no_grad()`` (or ``inference_mode``) a training-mode forward with labels could not
    update the layer; rather than skip the update silently, this raises (the reference package fails
    there too, at its ``backward``).
    """
    if propagator.training and not torch.is_grad_enabled():
        raise RuntimeError(
            f"{type(propagator).__name__} is in training mode and got labels under torch.no_grad(): it cannot "
            "learn there. Call model.eval() to measure the local losses without updates, or run the "
            "training step with gradients enabled"
        )


def _parameters_trained_by(role: str, modules: tuple[nn.Module | None, ...]) -> Iterator[nn.Parameter]:
    seen: set[int] = set()

    def walk(module: nn.Module) -> Iterator[nn.Parameter]:
        if isinstance(module, Propagator):
            # A propagator owns everything inside it.
            if module.trained_by == role:
                yield from module.parameters()
            return
        if role == "global":
            yield from module.parameters(recurse=False)
        for child in module.children():
            yield from walk(child)

    for module in modules:
        if module is None:
            continue
        for p in walk(module):
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                yield p


def global_parameters(*modules: nn.Module | None) -> Iterator[nn.Parameter]:
    """Parameters the user's optimizer must train: Identity-wrapped layers and anything not wrapped."""
    return _parameters_trained_by("global", modules)


def local_parameters(*modules: nn.Module | None) -> Iterator[nn.Parameter]:
    """Parameters trained by the propagators' own local losses (hidden layers and the signal)."""
    return _parameters_trained_by("local", modules)
