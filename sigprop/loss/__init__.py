"""Local losses: each trains one layer from its output, the signal and the targets."""
from . import functional, similarity, ties
from .base import Loss, needs_per_class_signal
from .input_label import v1_input_label_direct
from .input_target import v9_input_target_max_all, v14_input_target_max_rand, v15_input_target_topk
from .similarity import *  # noqa: F403 - the helpers listed in similarity.__all__

__all__ = [
    "Loss",
    "functional",
    "needs_per_class_signal",
    "similarity",
    "ties",
    "v1_input_label_direct",
    "v9_input_target_max_all",
    "v14_input_target_max_rand",
    "v15_input_target_topk",
    *similarity.__all__,
]
