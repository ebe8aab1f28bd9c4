"""The losses and their helpers under the reference package's import path ``sigprop.loss.functional``."""
from . import input_label, input_target, utils
from .input_label import *  # noqa: F403
from .input_target import *  # noqa: F403
from .utils import *  # noqa: F403

__all__ = [*input_label.__all__, *input_target.__all__, *utils.__all__]
