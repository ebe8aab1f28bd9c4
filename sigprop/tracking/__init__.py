"""Where a run's metrics go: ``metrics.jsonl`` in the run folder and, optionally, Weights & Biases.

Every writer has the same three calls (``Tracker``): ``start(config)`` once, ``log(metrics, step)``
once per epoch, ``finish(summary, status)`` at the end. The package is not called ``logging`` so that it
cannot shadow the standard library.
"""
from .base import Tracker, Trackers
from .jsonl import JsonlTracker
from .wandb_tracker import TrackerError, WandbTracker

__all__ = ["JsonlTracker", "Tracker", "TrackerError", "Trackers", "WandbTracker"]
