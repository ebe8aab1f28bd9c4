"""The signal base class under the reference package's import path (defined in ``sigprop.signals.base``)."""
from .base import Signal

__all__ = ["Signal"]
