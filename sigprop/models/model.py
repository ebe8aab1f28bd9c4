"""Models: put the signal in front of the wrapped network and handle inputs and outputs."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..propagators.base import Propagator

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

    def parameters(self, recurse: bool = True) -> list[nn.Parameter]:  # type: ignore[override]
        """The parameters of the layers the user's optimizer trains, as the reference package: a list
        of every parameter inside the network's propagators trained that way (``Identity``, and
        custom ``Propagator`` subclasses), frozen ones included, so that ``requires_grad_`` and
        ``zero_grad`` reach them. Never the layers that train themselves (``Loss``, the signal).

        Parameters of layers the network holds outside any propagator are not included: the
        user's optimizer must train those too, and ``propagators.global_parameters(model)``
        lists both. ``recurse=False``: the parameters registered on the model itself, as for any
        ``nn.Module``. ``named_parameters()`` and ``state_dict()`` cover everything.
        """
        if not recurse:
            return list(super().parameters(recurse=False))
        params: dict[int, nn.Parameter] = {}
        for m in self.model.modules():
            if isinstance(m, Propagator) and m.trained_by == "global":
                params.update((id(p), p) for p in m.parameters())
        return list(params.values())

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
