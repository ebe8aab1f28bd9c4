"""Local losses: each trains one layer from its output, the signal and the targets."""
from . import functional, similarity
from .base import Loss, needs_per_class_signal
from .input_label import v1_input_label_direct
from .input_target import v9_input_target_max_all, v14_input_target_max_rand, v15_input_target_topk
from .similarity import (
    format_2dim_,
    format_4dim_,
    format_sim_2dim_,
    format_sim_4dim_,
    sim_2dim_,
    sim_4dim_,
    similarity_format,
    similarity_matrix_x,
    similarity_matrix_xy,
    soft_target_cross_entropy,
)

__all__ = [
    "Loss",
    "format_2dim_",
    "format_4dim_",
    "format_sim_2dim_",
    "format_sim_4dim_",
    "functional",
    "needs_per_class_signal",
    "sim_2dim_",
    "sim_4dim_",
    "similarity",
    "similarity_format",
    "similarity_matrix_x",
    "similarity_matrix_xy",
    "soft_target_cross_entropy",
    "v1_input_label_direct",
    "v9_input_target_max_all",
    "v14_input_target_max_rand",
    "v15_input_target_topk",
]
