"""The loss base class under the reference package's import path (defined in ``sigprop.loss.base``)."""
from .base import Loss

__all__ = ["Loss"]
