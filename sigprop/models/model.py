"""Models: put the signal in front of the wrapped network and handle inputs and outputs."""
from __future__ import annotations

from typing import Any, Iterator

from torch import Tensor, nn

from ..propagators.base import global_parameters

_NOT_GIVEN: Any = object()


def split_input(input: Any, context: Any) -> tuple[Tensor, Tensor | None]:
    """Accept ``model((x, y))``, ``model(x, y)``, ``model(x)`` and ``model(x, None)``."""
    if context is not _NOT_GIVEN:
        return input, context
    if isinstance(input, (tuple, list)):
        if len(input) != 2:
            raise ValueError(f"a model takes (x, context); got a sequence of {len(input)} items")
        return input[0], input[1]
    return input, None


class Model(nn.Module):
    """Base of the SigProp models.

    Args:
        model: the network, its layers wrapped in propagators (e.g. an ``nn.Sequential``).
        signal: the signal, wrapped in a signal propagator.
    """

    def __init__(self, model: nn.Module, signal: nn.Module) -> None:
        super().__init__()
        self.signal = signal
        self.model = model

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """Only the parameters the user's optimizer must train (never the layers that train themselves)."""
        return global_parameters(self.model, self.signal)

    def forward(self, input: Any, context: Any = _NOT_GIVEN) -> Tensor:
        raise NotImplementedError

    @classmethod
    def manage(cls, manager: Any, module: nn.Module, **kwargs: Any) -> "Model":
        """Wrap ``module`` through ``manager.set_model`` with this class."""
        return manager.set_model(module, cls, **kwargs)


class Forward(Model):
    """Learning and inference in one forward pass: ``signal((x, context, context))`` then the network.

    With a context (training, or evaluation with labels for the per-layer metrics) every
    propagator learns or measures its local loss; without one it is plain inference.
    Returns the output layer's ``h``.
    """

    def forward(self, input: Any, context: Any = _NOT_GIVEN) -> Tensor:
        x, context = split_input(input, context)
        # The state is built inside the call so no local name keeps the signal's outputs alive
        # while the layers run (each layer's input is then freed as soon as the next has it).
        h1, _, _ = self.model((*self.signal((x, context, context)), context))
        return h1
