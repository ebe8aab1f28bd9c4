"""Propagators: wrap each layer so it trains from its input and the signal as soon as it sees them."""
from . import functional, signals
from .base import LocalLosses, Propagator, global_parameters, local_parameters
from .learn import FUSABLE_TYPES, Learn, Loss, fusable, recomputable, uses_batch_statistics, writes_input
from .other import Fixed, Forward, Identity

__all__ = [
    "FUSABLE_TYPES",
    "Fixed",
    "Forward",
    "Identity",
    "Learn",
    "LocalLosses",
    "Loss",
    "Propagator",
    "functional",
    "fusable",
    "global_parameters",
    "local_parameters",
    "recomputable",
    "signals",
    "uses_batch_statistics",
    "writes_input",
]
