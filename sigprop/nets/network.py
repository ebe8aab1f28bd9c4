"""A network as the parts SigProp needs to see: an input stem, hidden blocks and an output head."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(eq=False)
class Network:
    """Plain ``nn.Module`` parts of one classifier.

    ``stem`` maps the input to the first hidden representation (the projection signal
    uses it as its input module), ``blocks`` follow in order (layers with parameters
    learn, parameter-free ones such as pooling and flattening do not), ``head`` is the
    output layer trained by cross-entropy.
    """

    stem: nn.Module
    blocks: list[nn.Module]
    head: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int

    def stem_shape(self) -> tuple[int, ...]:
        """Shape of one sample after the stem (what the signal must produce)."""
        with torch.no_grad():
            training = self.stem.training
            self.stem.eval()
            param = next(self.stem.parameters(), None)
            probe = torch.zeros((2,) + self.input_shape, device=param.device if param is not None else None)
            shape = tuple(self.stem(probe).shape[1:])
            self.stem.train(training)
        return shape

    def sequential(self) -> nn.Sequential:
        """The whole network as one module, for training end to end by backpropagation."""
        return nn.Sequential(self.stem, *self.blocks, self.head)
