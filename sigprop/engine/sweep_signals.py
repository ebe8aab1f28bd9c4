"""Stop signals in a sweep's processes: ``StopSweep`` (installed by ``sweeps.ConfigCheck``) makes SIGTERM, SIGINT
and SIGHUP close every record a run or a sweep has opened, at any moment.

In a joblib sweep's main process a stop signal goes on to the launcher's busy workers, whose jobs close their
records as interrupted (``train.py``'s ``StopSignals``); the main process waits for those records, lets the
workers exit as at a normal end, then exits 128 + the signal's number. With no worker (a single run, the basic
launcher), a run folder Hydra created without a record yet gets ``summary.json`` saying interrupted, and the
process stops at once. The one ``STOP`` instance is process-wide because signal handlers are.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from ..tracking.jsonl import METRICS_FILE, SUMMARY_FILE, write_summary
from ..utils import one_line
from . import rundir
from .interrupt import SIGNALS, Interrupted, request_stop
from .parallel import torchrun_world

log = logging.getLogger(__name__)


SWEEP_PID = "SIGPROP_SWEEP_PID"  # the sweep's main process, as its launcher's worker processes see it
WORKER_GRACE_S = 60.0  # how long the sweep's main process waits for its workers to close their records
WORKER_EXIT_S = 10.0  # and then for them to exit


def _proc_fields(pid: int | str) -> tuple[str, int]:
    """``(state, parent pid)`` of a process, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (``/proc/<pid>/status``'s SigCgt mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def sweep_workers() -> list[int]:
    """The process ids of this process's launcher workers (joblib's loky processes; not its resource tracker)
    that have run a job: those hold ``StopSweep``'s handler. Read from ``/proc`` (Linux); elsewhere none."""
    workers = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            state, ppid = _proc_fields(entry.name)
            if ppid != os.getpid() or state == "Z":
                continue
            command = (entry / "cmdline").read_bytes()
            if b"loky" in command and b"resource_tracker" not in command and _catches(int(entry.name), signal.SIGTERM):
                workers.append(int(entry.name))
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return workers


def starting_run_dir(claimed: Path | None) -> Path | None:
    """The folder of the run or job Hydra is starting in this process: a sweep's job folder (inside the sweep's
    folder), else the single run's folder this process claimed (``claimed``); None when there is none yet."""
    if HydraConfig.initialized():
        config = HydraConfig.get()
        folder, sweep_dir = OmegaConf.select(config, "runtime.output_dir"), OmegaConf.select(config, "sweep.dir")
        if config.mode == RunMode.MULTIRUN and folder and sweep_dir:
            folder, sweep_dir = Path(folder).resolve(), Path(str(sweep_dir)).resolve()
            return folder if sweep_dir in folder.parents else None
    return claimed


def close_unstarted_run(folder: Path | None, signum: int) -> None:
    """``summary.json`` saying interrupted in ``folder`` (a run or job Hydra is starting), if it was created
    but holds no record yet (a signal while Hydra writes its ``.hydra/`` files, before ``train.py`` takes over)."""
    world = torchrun_world()
    if folder is None or not folder.is_dir() or (world is not None and world[0] != 0):
        return
    claim = folder / rundir.CLAIM_FILE
    try:
        owner = claim.read_text(encoding="utf-8") if claim.is_file() else ""
        if owner and not owner.startswith(f"pid {os.getpid()} "):  # empty: this process is writing it
            return  # another run's folder (it claimed it first)
    except OSError:
        return
    if any((folder / name).exists() for name in (SUMMARY_FILE, METRICS_FILE, "checkpoint.pt")):
        return
    reason = f"interrupted by {signal.Signals(signum).name}"
    try:
        write_summary(folder, {"last_epoch": 0, "world_size": 1, "reason": reason}, "interrupted")
        log.error("%s; %s: no epoch completed; summary.json says interrupted", reason, folder)
    except OSError as err:
        log.error("%s; %s could not be written: %s", reason, folder / SUMMARY_FILE, one_line(err))


class StopSweep:
    """The stop signals outside a job's training (which ``train.py``'s ``StopSignals`` handles), in every process
    of a run or a sweep; installed by ``ConfigCheck`` before Hydra creates a folder.

    - The sweep's (or single run's) main process with launcher workers that are running jobs (joblib): the
      signal goes on to the workers (a SIGTERM sent to the main process alone reaches them too), the main
      process waits until every started job's record is closed (at most ``WORKER_GRACE_S``), then raises
      ``Interrupted``: the launcher ends its workers and the command exits with 128 + the signal's number.
    - Without workers (a single run, the basic launcher): a folder Hydra created but ``train.py`` has not
      taken over gets its summary.json (interrupted), and ``Interrupted`` is raised at once.
    - A launcher's worker process, between or before its jobs: it closes a job Hydra is starting and remembers
      the stop, so each job it is still given closes at once as interrupted (``interrupt.check_stop``).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.sweep_dir: Path | None = None
        self.run_dir: Path | None = None  # a single run's folder, once this process claimed it

    def install(self, sweep_dir: Path | None = None) -> None:
        """Handle the stop signals in this process from now on (Python handles signals in its main thread only)."""
        if sweep_dir is not None:
            self.sweep_dir = sweep_dir
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                signal.signal(signum, self._handle)

    @staticmethod
    def in_worker() -> bool:
        """Whether this process is a launcher's worker of a sweep started in another process."""
        return os.environ.get(SWEEP_PID, str(os.getpid())) != str(os.getpid())

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        request_stop(signum)
        if self.received is not None:
            return  # a stop is under way
        self.received = signum
        close_unstarted_run(starting_run_dir(self.run_dir), signum)
        if self.in_worker():
            return  # the sweep's main process collects this worker's jobs; the next one closes at once
        workers = sweep_workers()
        for pid in workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        if workers and self.sweep_dir is not None:
            self._wait_for_records(self.sweep_dir, workers)
            self._end_workers(workers)
        raise Interrupted(signum)

    def _wait_for_records(self, sweep_dir: Path, workers: list[int]) -> None:
        """Until every started job in ``sweep_dir`` has its summary.json (or its workers ended), at most
        ``WORKER_GRACE_S``: once the sweep's main process stops, the launcher ends its workers."""
        end = time.monotonic() + WORKER_GRACE_S
        while time.monotonic() < end:
            open_jobs = [folder for _, _, folder in rundir.started_jobs(sweep_dir) if not (folder / SUMMARY_FILE).exists()]
            if not open_jobs or not any(self._alive(pid) for pid in workers):
                return
            time.sleep(0.1)
        log.error("the sweep's workers did not close their records within %.0f s", WORKER_GRACE_S)

    def _end_workers(self, workers: list[int]) -> None:
        """Ask joblib's workers to exit as they would at the sweep's normal end (at most ``WORKER_EXIT_S``): the
        launcher otherwise kills them, and what they held (semaphores, W&B's process) is reported as leaked."""
        try:
            from joblib.externals.loky import reusable_executor
        except ImportError:
            return
        executor = getattr(reusable_executor, "_executor", None)  # the one joblib's workers belong to
        if executor is None:
            return
        executor.shutdown(wait=False)
        end = time.monotonic() + WORKER_EXIT_S
        while any(self._alive(pid) for pid in workers) and time.monotonic() < end:
            time.sleep(0.05)

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            return _proc_fields(pid)[0] != "Z"
        except (OSError, ValueError):
            return False


STOP = StopSweep()
