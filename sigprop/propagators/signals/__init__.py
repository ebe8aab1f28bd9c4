"""Propagators for the signal at the front of the network."""
from .learn import Learn, Loss
from .other import Fixed

__all__ = ["Fixed", "Learn", "Loss"]
