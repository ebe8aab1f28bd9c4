"""Models: the signal plus the wrapped network, with the input and output handling."""
from .loop_back import ForwardLoopBack, LoopBack
from .model import Forward, Model

__all__ = ["Forward", "ForwardLoopBack", "LoopBack", "Model"]
