"""SIGTERM and SIGINT as an orderly stop: the epoch in progress is abandoned, the run's record is closed.

Schedulers (SLURM, Kubernetes, ``timeout``, submitit's preemption) send SIGTERM; Ctrl-C sends
SIGINT. Inside ``StopSignals`` both raise ``Interrupted`` in the main thread, so ``train.py`` leaves
the epoch in progress, marks the run interrupted (summary.json, W&B) and exits with 128 + the
signal's number (143, 130). Inside ``StopSignals.held()`` a signal waits until the block ends, so
an epoch's record (metrics line, W&B point, checkpoint) is written whole or not at all.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):
    """A stop signal arrived. A ``BaseException`` (like ``KeyboardInterrupt``): no ``except Exception`` swallows it,
    and Hydra's sweeps stop instead of going on with the next job."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.name}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class StopSignals:
    """A context in which SIGTERM and SIGINT raise ``Interrupted`` (the previous handlers come back on exit)."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first stop signal
        self._holding = 0
        self._pending = False  # a signal arrived inside held()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._holding:
            self._pending = True
        else:
            raise Interrupted(self.received)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run the block to its end even if a signal arrives; then raise ``Interrupted`` for it."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if self._holding == 0 and self._pending:
            self._pending = False
            raise Interrupted(self.received or signal.SIGTERM)
