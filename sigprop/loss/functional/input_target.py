"""The input-target losses under the reference package's import path (defined in ``sigprop.loss.input_target``)."""
from ..input_target import v9_input_target_max_all, v14_input_target_max_rand, v15_input_target_topk

__all__ = ["v14_input_target_max_rand", "v15_input_target_topk", "v9_input_target_max_all"]
