"""The tracker interface and a fan-out over several trackers."""
from __future__ import annotations

from typing import Any, Mapping, Sequence


class Tracker:
    """Receives a run's configuration, one dict of metrics per epoch, and the run's summary."""

    def start(self, config: Mapping[str, Any]) -> None:
        """Open the run with its resolved configuration."""

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Record the metrics of epoch ``step``."""

    def finish(self, summary: Mapping[str, Any], status: str = "finished") -> None:
        """Record the summary (final and best values) and close the run; ``status`` says how it ended:
        ``finished``, ``interrupted``, ``diverged`` or ``failed`` (``sigprop.engine.outcome``)."""


class Trackers(Tracker):
    """Sends every call to each of ``trackers`` in order."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def start(self, config: Mapping[str, Any]) -> None:
        for t in self.trackers:
            t.start(config)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for t in self.trackers:
            t.log(metrics, step)

    def finish(self, summary: Mapping[str, Any], status: str = "finished") -> None:
        # Close every tracker even if one fails, so no W&B run is left open for the next job of a sweep.
        errors = []
        for t in self.trackers:
            try:
                t.finish(summary, status)
            except Exception as err:  # noqa: BLE001 - re-raised below once all are closed
                errors.append(err)
        if errors:
            raise errors[0]
