"""Plain networks (MLP, a small CNN, VGG) as a stem, hidden blocks and an output head; nothing here knows SigProp."""
from .cnn import cnn
from .mlp import mlp
from .network import Network
from .vgg import CONFIGS, vgg

__all__ = ["CONFIGS", "Network", "cnn", "mlp", "vgg"]
