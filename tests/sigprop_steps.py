"""A training step of a SigProp model, shared by the library's tests.

Imported by the tests as ``sigprop_steps`` (pytest puts this folder on ``sys.path``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigprop.propagators import LocalLosses


def train_step(
    model: nn.Module,
    x: Tensor,
    context: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    deferred: LocalLosses | None = None,
    local_optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """``model(x, context)`` (the signal and hidden layers learn, or collect their losses in
    ``deferred`` for one backward and ``local_optimizer``'s step), then the output layer's
    cross-entropy step with ``optimizer``."""
    out = model(x, context)
    if deferred is not None:
        assert local_optimizer is not None, "deferred losses need the optimizer of the local parameters"
        local_optimizer.zero_grad()
        deferred.pop_sum().backward()
        local_optimizer.step()
    optimizer.zero_grad()
    F.cross_entropy(out, labels).backward()
    optimizer.step()
