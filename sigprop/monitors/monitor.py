"""Monitors collect per-layer metrics while the propagators learn."""
from __future__ import annotations


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
