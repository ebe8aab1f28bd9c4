"""The functional propagators under the reference package's other import path (see ``propagators.functional``)."""
from .functional import fixed, forward, identity

__all__ = ["fixed", "forward", "identity"]
