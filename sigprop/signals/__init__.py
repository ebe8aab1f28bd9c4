"""Signals: generators build the learning signal from the target; formatters prepare the target."""
from . import functional
from .base import Formatter, Generator, Signal
from .formatters import DistinctBatchLabels, DistinctBatchLabelsOnehot, LabelNumberToOnehot, LabelVectorToNumber
from .generators import FixedDrawContext, ProjectionContext, ProjectionContextInput

__all__ = [
    "DistinctBatchLabels",
    "DistinctBatchLabelsOnehot",
    "FixedDrawContext",
    "Formatter",
    "Generator",
    "LabelNumberToOnehot",
    "LabelVectorToNumber",
    "ProjectionContext",
    "ProjectionContextInput",
    "Signal",
    "functional",
]
