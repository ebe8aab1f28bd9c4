"""SIGTERM, SIGINT and SIGHUP as an orderly stop: the epoch in progress is abandoned, the run's record is closed.

Schedulers (SLURM, Kubernetes, ``timeout``, submitit's preemption) send SIGTERM; Ctrl-C sends
SIGINT; a closed terminal sends SIGHUP. Inside ``StopSignals`` they raise ``Interrupted`` in the main
thread, so ``train.py`` leaves the epoch in progress, marks the run interrupted (summary.json, W&B)
and exits with 128 + the signal's number (143, 130, 129). Inside ``StopSignals.held()`` a signal
waits until the block ends, so an epoch's record (metrics line, W&B point, checkpoint) is written
whole or not at all. Once a stop is under way, further stop signals (Ctrl-C pressed twice, or the
same signal from the terminal and again from a sweep's main process) do not interrupt the closing
of the record.

A process remembers that it was told to stop (``stop_requested``): a sweep's worker process that
gets a stop signal between jobs closes the next job it is given at once (``check_stop``).
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

_stop_requested: int | None = None  # the first stop signal this process received


def request_stop(signum: int) -> None:
    """Remember that this process was told to stop (the first signal counts)."""
    global _stop_requested
    if _stop_requested is None:
        _stop_requested = int(signum)


def stop_requested() -> int | None:
    """The first stop signal this process received, if any."""
    return _stop_requested


def check_stop() -> None:
    """Raise ``Interrupted`` if this process was told to stop before (e.g. a sweep's worker between jobs)."""
    if _stop_requested is not None:
        raise Interrupted(_stop_requested)


class Interrupted(BaseException):
    """A stop signal arrived. A ``BaseException`` (like ``KeyboardInterrupt``): no ``except Exception`` swallows it,
    and Hydra's sweeps stop instead of going on with the next job."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.name}")

    def __reduce__(self) -> tuple[type, tuple[int]]:
        # A launcher's worker sends it back to the sweep's main process pickled: rebuilt from the signal's number.
        return Interrupted, (self.signum,)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class StopSignals:
    """A context in which the stop signals raise ``Interrupted``, once (the previous handlers come back on exit)."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first stop signal
        self._holding = 0
        self._pending = False  # a signal arrived inside held()
        self._raised = False  # Interrupted was raised: the record is being closed
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
        request_stop(signum)
        if self.received is None:
            self.received = signum
        if self._raised:
            return  # a stop is under way: a second signal must not cut the closing of the record short
        if self._holding:
            self._pending = True
        else:
            self._raised = True
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
            self._raised = True
            raise Interrupted(self.received or signal.SIGTERM)
