"""Managers: configure signal, propagators and model once, then wrap an existing network layer by layer."""
from .manager import Manager, OptimizerBuilder, Prepared, Preset, accepted_kwargs

__all__ = ["Manager", "OptimizerBuilder", "Prepared", "Preset", "accepted_kwargs"]
