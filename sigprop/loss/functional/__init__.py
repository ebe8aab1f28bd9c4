"""The losses and their helpers under the reference package's import path ``sigprop.loss.functional``."""
from ..input_label import v1_input_label_direct
from ..input_target import v9_input_target_max_all, v14_input_target_max_rand, v15_input_target_topk
from . import input_label, input_target, utils
from .utils import (
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
    "format_2dim_",
    "format_4dim_",
    "format_sim_2dim_",
    "format_sim_4dim_",
    "sim_2dim_",
    "sim_4dim_",
    "similarity_format",
    "similarity_matrix_x",
    "similarity_matrix_xy",
    "soft_target_cross_entropy",
    "v14_input_target_max_rand",
    "v15_input_target_topk",
    "v1_input_label_direct",
    "v9_input_target_max_all",
]
