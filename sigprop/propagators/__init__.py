"""Propagators: wrap each layer so it trains from its input and the signal as soon as it sees them."""
from ..functional import propagators as functional
from . import signals
from .base import LocalLearner, LocalLosses, LossUpdate, Propagator, global_parameters, local_parameters
from .learn import Learn, Loss, recomputable, uses_batch_statistics
from .other import Fixed, Forward, Identity

__all__ = [
    "Fixed",
    "Forward",
    "Identity",
    "Learn",
    "LocalLearner",
    "LocalLosses",
    "Loss",
    "LossUpdate",
    "Propagator",
    "functional",
    "global_parameters",
    "local_parameters",
    "recomputable",
    "signals",
    "uses_batch_statistics",
]
