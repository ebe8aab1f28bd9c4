"""Monitors: per-layer metrics collected while the propagators learn."""
from . import loss
from .monitor import Group, Monitor

__all__ = ["Group", "Monitor", "loss"]
