"""The checks and records around Hydra's runs and sweeps: ``ConfigCheck`` (a Hydra callback) checks every job
before anything is written, claims the run's folder, and lists the jobs of a sweep that did not finish.

``sweep_jobs`` lists every job of a multirun before the first one starts (so all of them can be checked first).

Hydra's basic sweeper runs the cartesian product of the sweep's overrides (``loss=v9,v15 seed=0,1``:
four jobs). It offers no public call that lists them, so ``sweep_jobs`` repeats its rule with Hydra's
public override parser; ``tests/app/test_app_sweeps.py`` checks the result against the sweeper's own
expansion, so a change in Hydra shows there first. Other sweepers (plugins such as Optuna) choose
their jobs as they go: for them nothing is listed and each job is checked when it starts.
"""
from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..tracking.jsonl import METRICS_FILE, SUMMARY_FILE, write_summary
from ..utils import one_line
from . import rundir
from .checks import check_config
from .config import ConfigError
from .interrupt import SIGNALS, Interrupted, request_stop
from .parallel import torchrun_world

log = logging.getLogger("sweep")

# The class name Hydra's sweeper config gives its basic sweeper (hydra/sweeper/basic).
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_jobs(config: DictConfig, parser: OverridesParser) -> list[list[str]]:
    """Every job's overrides in a multirun of Hydra's basic sweeper, in the order it runs them
    (``[]`` for other sweepers). ``config`` is the multirun's config (with its ``hydra`` node)."""
    if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return []
    params = [f"{key}={value}" for key, value in (config.hydra.sweeper.get("params") or {}).items()]
    choices: dict[str, list[str]] = {}  # one list per key; a later override of a key replaces an earlier one
    for override in parser.parse_overrides(params + list(config.hydra.overrides.task)):
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise ValueError(f"{key}: the basic sweeper takes lists, choice() and range(), not intervals")
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def started_jobs(sweep_dir: Path, output_subdir: str = ".hydra") -> list[tuple[int, list[str], Path]]:
    """``(job number, overrides, run folder)`` of every job of the sweep in ``sweep_dir`` that started (Hydra
    wrote its ``<output_subdir>/hydra.yaml``), by job number."""
    jobs = []
    for path in sweep_dir.glob(f"**/{output_subdir}/hydra.yaml"):
        node = OmegaConf.load(path).hydra
        jobs.append((int(node.job.num), list(node.overrides.task), path.parents[len(Path(output_subdir).parts)]))
    return sorted(jobs, key=lambda job: job[0])


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
            open_jobs = [folder for _, _, folder in started_jobs(sweep_dir) if not (folder / SUMMARY_FILE).exists()]
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


class JobNotFinished(Exception):
    """A sweep's job that ended without finishing (its ``summary.json`` says how), as a search's sweeper sees it."""


class ConfigCheck(Callback):
    """Hydra callback: ``checks.check_config`` before a run's folder is created, and for every job of a sweep
    before the first job starts (so a bad value in a sweep stops it before any training); then the run's
    folder (a sweep's folder) is claimed (``rundir.claim``) before Hydra writes anything there. After a
    sweep, the jobs whose record does not say ``finished`` are listed in one line, exit status 1.

    Hydra turns exceptions raised by callbacks into warnings and carries on, so a failed check
    exits here with the one-line message (``SystemExit``, status 1).
    """

    def __init__(self) -> None:
        self.jobs = 0
        self.failed: list[str] = []

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(SWEEP_PID, None)  # a single run is its own main process, even if started from a sweep's job
        STOP.install()
        try:
            check_config(config)
            world = torchrun_world()
            if world is not None and world[0] != 0:
                return  # a torchrun run: rank 0 claims the folder all ranks share
            # Before Hydra writes its .hydra/ files there: an earlier run's folder, finished or failed, stays untouched.
            run_dir = rundir.check_unused_folder(config.hydra.run.dir, "hydra.run.dir", config.hydra.output_subdir)
            STOP.run_dir = run_dir  # from the moment the folder may exist: a signal then leaves it a record
            rundir.claim(run_dir)
        except (ConfigError, HydraException, OmegaConfBaseException) as err:
            raise SystemExit(f"error: {one_line(err)}") from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[SWEEP_PID] = str(os.getpid())  # inherited by the launcher's workers
        STOP.install(Path(str(config.hydra.sweep.dir)))
        if not str(config.hydra.sweep.dir).strip():
            raise SystemExit("error: hydra.sweep.dir is empty: give the sweep a folder of its own (hydra.sweep.dir=multirun/<name>)")
        sweep_dir = Path(config.hydra.sweep.dir)
        trials = config.hydra.sweeper.get("n_trials", 1)
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise SystemExit(f"error: hydra.sweeper.n_trials={trials}: must be a whole number of trials from 1")
        earlier = next(sweep_dir.glob(f"*/{METRICS_FILE}"), None) if sweep_dir.is_dir() else None
        if earlier is not None:
            raise SystemExit(
                f"error: {sweep_dir} already holds a sweep ({earlier}): give the new sweep its own folder (hydra.sweep.dir)"
            )
        loader = GlobalHydra.instance().config_loader()
        try:
            jobs = sweep_jobs(config, OverridesParser.create(config_loader=loader))
        except (ValueError, HydraException) as err:
            raise SystemExit(f"error: {one_line(err)}") from None
        for overrides in jobs:
            try:
                check_config(loader.load_sweep_config(config, overrides))
            except (ConfigError, HydraException, OmegaConfBaseException) as err:
                raise SystemExit(f"error: {one_line(err)} (in the sweep's job {' '.join(overrides)})") from None
        try:
            rundir.claim(sweep_dir, "hydra.sweep.dir")
        except ConfigError as err:
            raise SystemExit(f"error: {err}") from None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        STOP.install()  # in a launcher's worker process: its first job is where it starts handling them

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        self.jobs += 1
        status, reason = rundir.job_record(Path(config.hydra.runtime.output_dir))
        if job_return.status == JobStatus.FAILED:  # an error Hydra caught: the job's record could not say so
            status, reason = "failed", one_line(job_return._return_value)
        elif status != "finished" and config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            # A search (Optuna) tells its study each job's return value; train.py returns NaN for a job that did
            # not finish, which optuna 2 refuses, twice, ending the search with a traceback. A failed job return
            # is a failed trial to it, and the search goes on. (The basic sweeper stops at a failed job return.)
            job_return.status = JobStatus.FAILED
            job_return._return_value = JobNotFinished(f"job {config.hydra.job.num} {status}" + (f": {reason}" if reason else ""))
        self._record(config.hydra.job.num, job_return.overrides or [], status, reason)

    def _record(self, num: int, overrides: Sequence[str], status: str, reason: str) -> None:
        if status != "finished":
            self.failed.append(f"job {num} ({' '.join(overrides)}) {status}" + (f": {reason}" if reason else ""))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.jobs == 0 and config.hydra.output_subdir is not None:
            # The launcher ran the jobs in other processes (joblib, submitit), where on_job_end counted them:
            # read each started job's record from its folder instead.
            for num, overrides, run_dir in started_jobs(Path(config.hydra.sweep.dir), config.hydra.output_subdir):
                self.jobs += 1
                self._record(num, overrides, *rundir.job_record(run_dir))
        sweep_dir = config.hydra.sweep.dir
        where = f"results in {sweep_dir} (python experiments/compare.py {sweep_dir})"
        if self.failed:
            raise SystemExit(
                f"error: {len(self.failed)} of {self.jobs} jobs did not finish: {'; '.join(self.failed)}; "
                f"{self.jobs - len(self.failed)} finished; {where}"
            )
        if self.jobs:
            log.info("sweep done: %d of %d jobs finished; %s", self.jobs, self.jobs, where)
