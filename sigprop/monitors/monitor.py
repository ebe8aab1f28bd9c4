"""Monitors collect per-layer metrics while the propagators learn."""
from __future__ import annotations

import math

import torch
from torch import Tensor


class Monitor:
    """Something that accumulates metrics and can be reset between epochs."""

    name: str = ""

    def reset(self) -> None:
        raise NotImplementedError

    def metrics(self) -> str:
        """A one-line human-readable summary."""
        raise NotImplementedError

    def values(self) -> dict[str, float]:
        """The accumulated metrics as numbers (reading them synchronises with the device)."""
        raise NotImplementedError


class Group(Monitor):
    """A list of monitors handled together (one per layer)."""

    def __init__(self) -> None:
        self.monitors: list[Monitor] = []

    def add(self, monitor: Monitor) -> None:
        self.monitors.append(monitor)

    def reset(self) -> None:
        for m in self.monitors:
            m.reset()

    def metrics(self) -> str:
        return "\n".join(m.metrics() for m in self.monitors)

    def values(self) -> dict[str, dict[str, float]]:  # type: ignore[override]
        """``{monitor name: {metric: value}}`` for every monitor."""
        return {m.name: m.values() for m in self.monitors}


class LossAccuracySums:
    """A loss summed over samples and a count of correct ones, kept on the device until ``values``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum: Tensor | float = 0.0
        self.correct: Tensor | float = 0.0
        self.count = 0

    def add(self, loss: Tensor, correct: Tensor | None, n: int) -> None:
        """Add a batch of ``n`` samples with mean ``loss`` and ``correct`` right answers (``None``: unknown).

        The sum keeps the loss's precision (float64 stays float64; half precisions are summed in float32).
        """
        loss = loss.detach()
        self.loss_sum = self.loss_sum + loss.to(torch.promote_types(loss.dtype, torch.float32)) * n
        if correct is not None:
            self.correct = self.correct + correct
        self.count += n

    def values(self) -> dict[str, float]:
        """Mean loss and accuracy (reads the device); NaN before any sample."""
        if self.count == 0:
            return {"loss": math.nan, "acc": math.nan}
        return {"loss": float(self.loss_sum) / self.count, "acc": float(self.correct) / self.count}
