"""The functional formatters under the reference package's import path (defined in ``sigprop.functional.signals``)."""
from ..functional.signals import (
    distinct_batch_labels,
    distinct_batch_labels_onehot,
    label_number_to_onehot,
    label_vector_to_number,
)

__all__ = ["distinct_batch_labels", "distinct_batch_labels_onehot", "label_number_to_onehot", "label_vector_to_number"]
