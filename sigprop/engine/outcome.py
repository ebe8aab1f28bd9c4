"""How a run ended, for its record: ``summary.json``'s ``status`` and the W&B run's exit code.

``finished``: every epoch ran. ``interrupted``: SIGTERM, SIGINT or SIGHUP (``interrupt.py``); the epoch in
progress was abandoned. ``diverged``: a loss became NaN or infinite; that epoch was not recorded.
``failed``: anything else (a setting that does not fit the data, a full disk, a crash). In all
four the checkpoint and ``metrics.jsonl`` hold the last completed epoch.
"""
from __future__ import annotations

import errno
import math
import signal
from dataclasses import dataclass
from typing import Mapping

from omegaconf.errors import OmegaConfBaseException

from ..tracking import TrackerError
from ..utils import one_line
from .config import ConfigError
from .interrupt import Interrupted

STATUSES = ("finished", "interrupted", "diverged", "failed")


class JobFailed(Exception):
    """A job that cannot go on, with one line that says why (a sweep records it and runs its other jobs)."""

    status = "failed"


class Diverged(JobFailed):
    """A loss became NaN or infinite."""

    status = "diverged"


def first_non_finite(row: Mapping[str, float]) -> str | None:
    """The first non-finite loss of an epoch's metrics, layer by layer (``train/signal/loss``, ``train/layer01/loss``,
    ..., then the output layer's ``train/loss``; then the same for ``test``), or ``None`` if every loss is finite.

    The losses are the per-layer sums the monitors keep on the device and the loop reads once per phase,
    so this check costs no synchronisation inside a step.
    """
    for phase in ("train", "test"):
        local = [k for k in row if k.startswith(f"{phase}/") and k.endswith("/loss") and k.count("/") == 2]
        for key in [*local, f"{phase}/loss"]:
            if key in row and not math.isfinite(row[key]):
                return key
    return None


def check_finite(row: Mapping[str, float]) -> None:
    """Raise ``Diverged`` naming the first layer whose loss is not finite in the epoch ``row``."""
    key = first_non_finite(row)
    if key is None:
        return
    phase, *layer, _ = key.split("/")
    where = layer[0] if layer else "the output layer"
    raise Diverged(f"diverged in epoch {int(row['epoch'])}: the {phase} loss of {where} is {row[key]} (the first layer to go non-finite)")


def disk_full(err: BaseException | None) -> bool:
    """Whether ``err`` (or an error it was raised from) is "no space left on device" (or a full quota)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


@dataclass
class Outcome:
    """How a run ended: ``status`` (one of ``STATUSES``), a one-line ``reason`` and the error behind it."""

    status: str = "finished"
    reason: str = ""
    error: BaseException | None = None

    @property
    def expected(self) -> bool:
        """Whether the reason says all there is to say (no traceback needed): anything but a crash."""
        known = (Interrupted, JobFailed, TrackerError, ConfigError, OmegaConfBaseException)
        return self.error is None or isinstance(self.error, known) or disk_full(self.error)

    @property
    def exit_code(self) -> int:
        """0 for a finished run; 128 + the signal's number for an interrupted one; 1 otherwise."""
        if isinstance(self.error, Interrupted):
            return self.error.exit_code
        return 0 if self.status == "finished" else 1


def outcome_of(err: BaseException) -> Outcome:
    """The ``Outcome`` of a run that stopped with ``err``."""
    if isinstance(err, Interrupted):
        return Outcome("interrupted", f"interrupted by {err.name}", err)
    if isinstance(err, KeyboardInterrupt):  # SIGINT outside StopSignals
        return Outcome("interrupted", f"interrupted by {signal.SIGINT.name}", Interrupted(signal.SIGINT))
    if isinstance(err, JobFailed):
        return Outcome(err.status, str(err), err)
    if isinstance(err, (TrackerError, ConfigError)):  # their message is the one line
        return Outcome("failed", str(err), err)
    if disk_full(err):
        return Outcome("failed", "the disk is full (no space left on device)", err)
    return Outcome("failed", one_line(err, kind=True), err)
