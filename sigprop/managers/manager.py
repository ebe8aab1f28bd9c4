"""Manager, Prepared and Preset: wrap an existing network layer by layer with classes chosen once."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from ..monitors.monitor import Group

OptimizerBuilder = Callable[[nn.Module], "torch.optim.Optimizer | None"]


def accepted_kwargs(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``kwargs`` that ``cls.__init__`` takes by name (all of them if it takes ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(kwargs)
    return {k: v for k, v in kwargs.items() if k in params}


class Manager:
    """Interface of a manager: ``set_signal``, ``add_propagator``, ``set_model``, in that order."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.signal: nn.Module | None = None
        self.propagators: list[nn.Module] = []

    def set_signal(self, module: nn.Module, signal_cls: type | None = None, **kwargs: Any) -> nn.Module:
        raise NotImplementedError

    def add_propagator(self, module: nn.Module, propagator_cls: type | None = None, **kwargs: Any) -> nn.Module:
        raise NotImplementedError

    def set_model(self, module: nn.Module, **kwargs: Any) -> nn.Module:
        raise NotImplementedError


class Prepared(Manager):
    """Wraps with the classes given up front; keyword arguments go to each call.

    Args:
        model_cls: e.g. ``sigprop.models.Forward``.
        propagator_cls: default class for hidden layers, e.g. ``sigprop.propagators.Loss``.
        signal_cls: e.g. ``sigprop.propagators.signals.Loss``.
        monitor_cls: wraps each loss to record metrics, e.g. ``sigprop.monitors.loss.LabelMetrics``.
        monitor_main: the ``monitors.Group`` that collects them.
    """

    def __init__(
        self,
        model_cls: type,
        propagator_cls: type,
        signal_cls: type,
        monitor_cls: type | None = None,
        monitor_main: Group | None = None,
    ) -> None:
        super().__init__()
        self.model_cls = model_cls
        self.propagator_cls = propagator_cls
        self.signal_cls = signal_cls
        self.monitor_cls: type | None = None
        self.monitor_main: Group | None = None
        if monitor_cls is not None:
            self.set_monitor(monitor_cls, monitor_main)
        self.monitored_layers = 0

    def set_monitor(self, monitor_cls: type, monitor_main: Group | None) -> None:
        """Record every loss added from now on with ``monitor_cls`` into ``monitor_main``."""
        if self.monitor_cls is not None:
            raise RuntimeError("a monitor is already set on this manager")
        if monitor_main is None:
            raise ValueError("set_monitor() needs monitor_main, the monitors.Group that collects the metrics")
        if self.signal is not None or self.propagators:
            raise RuntimeError("set_monitor() must come before set_signal() and add_propagator()")
        self.monitor_cls = monitor_cls
        self.monitor_main = monitor_main

    def _monitored(self, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.monitor_cls is not None and kwargs.get("loss") is not None:
            monitor = self.monitor_cls(name, kwargs["loss"])
            assert self.monitor_main is not None
            self.monitor_main.add(monitor)
            kwargs = dict(kwargs, loss=monitor)
        return kwargs

    def set_signal(self, module: nn.Module, signal_cls: type | None = None, **kwargs: Any) -> nn.Module:
        """Wrap the signal in ``signal_cls`` (default: the manager's)."""
        if self.signal is not None:
            raise RuntimeError("set_signal() was already called on this manager")
        cls = self.signal_cls if signal_cls is None else signal_cls
        kwargs = self._monitored("signal", accepted_kwargs(cls, kwargs))
        self.signal = cls(module, **kwargs)
        return self.signal

    def add_propagator(self, module: nn.Module, propagator_cls: type | None = None, **kwargs: Any) -> nn.Module:
        """Wrap one layer in ``propagator_cls`` (default: the manager's); arguments it does not take are dropped."""
        if self.model is not None:
            raise RuntimeError("add_propagator() must come before set_model()")
        cls = self.propagator_cls if propagator_cls is None else propagator_cls
        kwargs = accepted_kwargs(cls, kwargs)
        if kwargs.get("loss") is not None and self.monitor_cls is not None:
            self.monitored_layers += 1
            kwargs = self._monitored(f"layer{self.monitored_layers:02d}", kwargs)
        propagator = cls(module, **kwargs)
        self.propagators.append(propagator)
        return propagator

    def set_model(self, module: nn.Module, model_cls: type | None = None, **kwargs: Any) -> nn.Module:
        """Wrap the network and the signal in the model class."""
        if self.model is not None:
            raise RuntimeError("set_model() was already called on this manager")
        if self.signal is None:
            raise RuntimeError("set_signal() must be called before set_model()")
        cls = self.model_cls if model_cls is None else model_cls
        self.model = cls(module, self.signal, **kwargs)
        return self.model


class Preset(Prepared):
    """A ``Prepared`` manager that also builds each layer's optimizer and holds default arguments.

    Args:
        model_cls, propagator_cls, signal_cls, monitor_cls, monitor_main: as for ``Prepared``.
        optimizer_builder: ``optimizer_builder(module)`` gives the optimizer for one layer
            (``None`` for a layer without parameters).
        model_kwargs, propagator_kwargs, signal_kwargs: defaults, also set by the ``config_*`` methods.
    """

    def __init__(
        self,
        model_cls: type,
        propagator_cls: type,
        signal_cls: type,
        optimizer_builder: OptimizerBuilder,
        monitor_cls: type | None = None,
        monitor_main: Group | None = None,
        model_kwargs: dict[str, Any] | None = None,
        propagator_kwargs: dict[str, Any] | None = None,
        signal_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(model_cls, propagator_cls, signal_cls, monitor_cls, monitor_main)
        self.optimizer_builder = optimizer_builder
        self.model_kwargs = dict(model_kwargs or {})
        self.propagator_kwargs = dict(propagator_kwargs or {})
        self.signal_kwargs = dict(signal_kwargs or {})

    def config_signal(self, **kwargs: Any) -> None:
        """Default arguments for ``set_signal``."""
        if self.signal is not None:
            raise RuntimeError("config_signal() must come before set_signal()")
        self.signal_kwargs.update(kwargs)

    def config_propagator(self, **kwargs: Any) -> None:
        """Default arguments for every ``add_propagator``."""
        if self.propagators:
            raise RuntimeError("config_propagator() must come before the first add_propagator()")
        self.propagator_kwargs.update(kwargs)

    def config_model(self, **kwargs: Any) -> None:
        """Default arguments for ``set_model``."""
        if self.model is not None:
            raise RuntimeError("config_model() must come before set_model()")
        self.model_kwargs.update(kwargs)

    def _with_optimizer(self, module: nn.Module, defaults: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
        merged = {**defaults, **kwargs}
        if "optimizer" not in merged:
            merged["optimizer"] = self.optimizer_builder(module)
        return merged

    def set_signal(self, module: nn.Module, signal_cls: type | None = None, **kwargs: Any) -> nn.Module:
        if self.signal is not None:
            raise RuntimeError("set_signal() was already called on this manager")
        return super().set_signal(module, signal_cls, **self._with_optimizer(module, self.signal_kwargs, kwargs))

    def add_propagator(self, module: nn.Module, propagator_cls: type | None = None, **kwargs: Any) -> nn.Module:
        cls = self.propagator_cls if propagator_cls is None else propagator_cls
        merged = {**self.propagator_kwargs, **kwargs}
        if "optimizer" in inspect.signature(cls.__init__).parameters and "optimizer" not in merged:
            merged["optimizer"] = self.optimizer_builder(module)
        return super().add_propagator(module, cls, **merged)

    def set_model(self, module: nn.Module, model_cls: type | None = None, **kwargs: Any) -> nn.Module:
        return super().set_model(module, model_cls, **{**self.model_kwargs, **kwargs})
