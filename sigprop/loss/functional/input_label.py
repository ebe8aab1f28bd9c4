"""The input-label loss under the reference package's import path (defined in ``sigprop.loss.input_label``)."""
from ..input_label import v1_input_label_direct

__all__ = ["v1_input_label_direct"]
