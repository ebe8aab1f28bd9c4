"""The propagator base class under the reference package's import path (defined in ``sigprop.propagators.base``)."""
from .base import Propagator

__all__ = ["Propagator"]
