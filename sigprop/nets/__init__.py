"""Plain networks (MLP, VGG) and the function that wraps their blocks in propagators."""
from .assemble import sigprop_model
from .mlp import mlp
from .network import Network
from .signals import Context, Draw, Projection, SignalChoice
from .vgg import CONFIGS, vgg

__all__ = ["CONFIGS", "Context", "Draw", "Network", "Projection", "SignalChoice", "mlp", "sigprop_model", "vgg"]
