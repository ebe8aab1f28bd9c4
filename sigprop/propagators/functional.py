"""The functional propagators under the reference package's import path (defined in ``sigprop.functional.propagators``)."""
from ..functional.propagators import fixed, forward, identity

__all__ = ["fixed", "forward", "identity"]
