"""The similarity helpers under the reference package's import path (defined in ``sigprop.loss.similarity``)."""
from ..similarity import *  # noqa: F403
from ..similarity import __all__  # noqa: F401
