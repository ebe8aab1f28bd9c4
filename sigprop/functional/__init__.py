"""Functional forms of propagators and signal formatters."""
from . import propagators, signals

__all__ = ["propagators", "signals"]
