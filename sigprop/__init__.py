"""Signal Propagation (SigProp): learning and inference in a forward pass.

Kohan, Rietman & Siegelmann, arXiv 2204.01723. A *signal* turns the target into
something the network can carry; every layer is wrapped in a *propagator* that trains
it from a local loss as soon as it sees its input and the signal.
"""
from . import functional, loss, managers, models, monitors, propagators, signals, utils

__version__ = "0.1.0"

__all__ = ["functional", "loss", "managers", "models", "monitors", "propagators", "signals", "utils"]
