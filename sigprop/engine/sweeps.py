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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from ..tracking.jsonl import METRICS_FILE
from ..utils import one_line
from . import rundir
from .checks import check_config
from .config import ConfigError
from .parallel import torchrun_world
from .sweep_signals import STOP, SWEEP_PID

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
            for num, overrides, run_dir in rundir.started_jobs(Path(config.hydra.sweep.dir), config.hydra.output_subdir):
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
