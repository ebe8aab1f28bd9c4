"""The type and range of every setting of the training app, declared once in ``SETTINGS``.

Hydra checks the top-level settings' types while it composes the config (``config.TrainConfig``);
the config groups' settings (``dataset.flip``, ``model.dropout``, ...) reach it untyped, since each
group's options differ. ``check_values`` checks every setting the composed config holds against this
table, before a run (or any job of a sweep) does any work: ``dataset.flip=maybe`` or ``dataset.flip=1``
is not a bool, ``model.dropout=-0.1`` is out of range, ``logger.tags=notalist`` is not a list. Ranges
that depend on the data (a crop padding larger than the images) are the dataset's to check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..nets.blocks import NONLINS, NORMS
from ..nets.vgg import CONFIGS
from ..signals.generators import LAYOUTS

MAX_COUNT = 2**31 - 1  # sizes and counts: torch indexes some of them with 32-bit integers
MAX_EPOCHS = 100_000
MAX_SEED = 2**63 - 1  # torch.manual_seed and torch.Generator take 64-bit seeds
MAX_SUBSET_SEED = 2**32 - 1  # numpy's RandomState
MAX_THREADS = 1024
MAX_SIDE = 65_535  # pixels: more than any image side


@dataclass(frozen=True)
class Spec:
    """What one setting accepts.

    ``kind``: ``bool``, ``int``, ``number`` (an int or float), ``text`` (a string or number), ``choice``
    (one of ``choices``), ``ints``/``numbers``/``texts`` (lists of those; ``numbers`` also takes one number
    when ``scalar``), ``size`` (an int or ``[height, width]``). Numbers lie in ``[low, high]``, with the
    ends excluded when ``open_low``/``open_high``; ``null``: ``None`` is accepted too.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    null: bool = False
    choices: tuple[Any, ...] = ()
    length: int | None = None
    scalar: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (what the setting must be), or ``None`` when it is accepted."""
        if value is None and self.null:
            return None
        if not self._accepts(value):
            return f"must be {self.describe()}" + (" or null" if self.null else "")
        return None

    def _accepts(self, value: Any) -> bool:
        kind = self.kind
        if kind != "choice" and any(value == c and type(value) is type(c) for c in self.choices):
            return True  # a word a list or number setting also takes (``parallel.split=auto``)
        if kind == "bool":
            return isinstance(value, bool)
        if kind == "choice":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if kind == "text":
            return isinstance(value, (str, int, float)) and not isinstance(value, bool)
        if kind in ("int", "number"):
            return self._number(value, integer=kind == "int")
        if kind == "size":
            return self._number(value, integer=True) or (
                isinstance(value, list) and len(value) == 2 and all(self._number(v, integer=True) for v in value)
            )
        if self.scalar and self._number(value, integer=False):
            return True
        if not isinstance(value, list) or (self.length is not None and len(value) != self.length):
            return False
        if kind == "texts":
            return all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value)
        return len(value) > 0 and all(self._number(v, integer=kind == "ints") for v in value)

    def _number(self, value: Any, integer: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.open_low and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.open_high and value == self.high))

    def describe(self) -> str:
        """What the setting must be, as a message says it."""
        kind = self.kind
        if kind == "bool":
            return "true or false"
        if kind == "choice":
            return "one of " + ", ".join(_show(c) for c in self.choices)
        if self.choices and kind != "choice":
            return ", ".join(_show(c) for c in self.choices) + ", or " + replace(self, choices=()).describe()
        if kind == "text":
            return "a string"
        if kind == "texts":
            return "a list of strings, e.g. [a,b]"
        if kind == "size":
            return f"a whole number {self._range()} or a list [height,width] of them"
        whole = kind in ("int", "ints")
        number = "a whole number" if whole else "a number" if self.high is not None else "a finite number"
        one = f"{number} {self._range()}".rstrip()
        if kind in ("int", "number"):
            return one
        count = f"{self.length} " if self.length else ""
        many = f"a list of {count}{number.removeprefix('a ')}s {self._range()}".rstrip()
        return f"{one}, or {many}" if self.scalar else many

    def _range(self) -> str:
        low, high = self.low, self.high
        if low is not None and high is not None:
            if self.kind in ("int", "ints", "size"):
                return f"from {low:,} to {high:,}"
            return f"in {'(' if self.open_low else '['}{low:g}, {high:g}{')' if self.open_high else ']'}"
        if low is not None:
            if self.open_low:
                return f"greater than {low:g}"
            return f"of at least {low:,}" if self.kind in ("int", "ints", "size") else f"of at least {low:g}"
        return ""


def Bool() -> Spec:  # noqa: N802 - read as the names of types in the table
    return Spec("bool")


def Int(low: int, high: int, null: bool = False) -> Spec:  # noqa: N802
    return Spec("int", low, high, null=null)


def Number(low: float, high: float | None = None, open_low: bool = False, open_high: bool = False, null: bool = False) -> Spec:  # noqa: N802
    return Spec("number", low, high, open_low, open_high, null=null)


def Choice(*choices: Any) -> Spec:  # noqa: N802
    return Spec("choice", choices=tuple(choices))


def Text(null: bool = False) -> Spec:  # noqa: N802
    return Spec("text", null=null)


COUNT = Int(1, MAX_COUNT)
OPTIONAL_COUNT = Int(1, MAX_COUNT, null=True)

# Every setting's type and range, by its key in the composed config (a group's keys apply to whichever
# of its options has them). A setting missing here is checked by the object its group builds.
SETTINGS: dict[str, Spec] = {
    # Top level (conf/config.yaml; Hydra checked their types already: these are the ranges)
    "seed": Int(0, MAX_SEED),
    "epochs": Int(1, MAX_EPOCHS),
    "batch_size": COUNT,
    "test_batch_size": COUNT,
    "threads": Int(1, MAX_THREADS, null=True),
    "refresh_every": COUNT,
    "progress": Choice("auto", True, False),
    "step.recompute_chunk": COUNT,
    "parallel.stages": COUNT,
    "parallel.split": Spec("ints", 0, MAX_COUNT, null=True, choices=("auto",)),
    "parallel.timeout": Number(0, 7 * 86_400, open_low=True),  # seconds
    # dataset
    "dataset.name": Text(),
    "dataset.root": Text(),
    "dataset.file": Text(),
    "dataset.path": Text(null=True),
    "dataset.download": Bool(),
    "dataset.extra": Bool(),
    "dataset.mean": Spec("numbers", null=True, scalar=True),
    "dataset.std": Spec("numbers", 0, open_low=True, null=True, scalar=True),
    "dataset.crop_padding": Int(0, MAX_SIDE),
    "dataset.flip": Bool(),
    "dataset.cutout_patches": Int(0, 100),
    "dataset.cutout_length": Int(0, MAX_SIDE),
    "dataset.train_subset": OPTIONAL_COUNT,
    "dataset.test_subset": OPTIONAL_COUNT,
    "dataset.val_size": OPTIONAL_COUNT,
    "dataset.subset_seed": Int(0, MAX_SUBSET_SEED),
    "dataset.image_size": Spec("size", 1, MAX_SIDE, null=True),
    "dataset.workers": Int(1, MAX_THREADS, null=True),
    # model
    "model.channels": Spec("ints", 1, MAX_COUNT),
    "model.num_layers": Int(0, 1000),
    "model.num_hidden": COUNT,
    "model.norm": Choice(*NORMS),
    "model.nonlin": Choice(*NONLINS),
    "model.dropout": Number(0, 1, open_high=True),
    "model.bias": Bool(),
    "model.name": Choice(*sorted(CONFIGS)),
    "model.feat_mult": Number(0, open_low=True),
    # signal
    "signal.per_class": Bool(),
    "signal.fixed": Bool(),
    "signal.places": COUNT,
    "signal.layout": Choice(*LAYOUTS),
    # loss
    "loss.topk": COUNT,
    # optimizer
    "optimizer.lr": Number(0),
    "optimizer.betas": Spec("numbers", 0, 1, open_high=True, length=2),
    "optimizer.eps": Number(0, open_low=True),
    "optimizer.weight_decay": Number(0),
    "optimizer.momentum": Number(0, 1, open_high=True),
    "optimizer.dampening": Number(0, 1),
    "optimizer.nesterov": Bool(),
    "optimizer.amsgrad": Bool(),
    # scheduler: milestones and gamma are checked with the schedule itself (checks.check_schedule)
    # logger
    "logger.project": Text(),
    "logger.entity": Text(null=True),
    "logger.mode": Choice("auto", "online", "offline", "disabled"),
    "logger.group": Text(null=True),
    "logger.name": Text(null=True),
    "logger.tags": Spec("texts"),
    "logger.job_type": Text(null=True),
    "logger.sweep": Text(null=True),
    "logger.timeout": Number(0, 86_400, open_low=True),
}

_ABSENT = object()


def problems(cfg: DictConfig, settings: Mapping[str, Spec] = SETTINGS) -> list[str]:
    """``key=value: must be ...`` for every setting of ``cfg`` that ``settings`` refuses, in table order."""
    found = []
    for key, spec in settings.items():
        try:
            value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException as err:  # e.g. an interpolation that does not resolve
            found.append(f"{key}: {str(err).splitlines()[0]}")
            continue
        if value is _ABSENT:
            continue  # an option without this setting
        problem = spec.problem(value)
        if problem:
            found.append(f"{key}={_show(value)}: {problem}")
    return found


def _show(value: Any) -> str:
    """A value as it is written on the command line (``true``, ``null``, ``[10,15]``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_show(v)}" for k, v in value.items()) + "}"
    return str(value)
