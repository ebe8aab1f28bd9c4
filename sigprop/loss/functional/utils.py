"""The similarity helpers under the reference package's import path (defined in ``sigprop.loss.similarity``)."""
from ..similarity import (
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
]
