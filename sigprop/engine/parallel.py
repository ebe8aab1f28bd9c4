"""Sharing a machine with other jobs: how many CPU threads one job of a parallel sweep may use.

Hydra's joblib launcher runs ``n_jobs`` jobs side by side on one machine, and submitit's launchers
give each job ``cpus_per_task`` cores. A job whose ``threads`` setting is left at ``null`` then
takes its share of the cores instead of torch's default (one thread per core in every job), so
parallel jobs do not wait on each other's OpenMP threads.
"""
from __future__ import annotations

import os
from typing import Any, Mapping


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a SLURM allocation), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def job_threads(launcher: Mapping[str, Any] | None, cores: int | None = None) -> int | None:
    """Torch threads for one job started by ``launcher`` (Hydra's ``hydra.launcher`` node): ``cpus_per_task``
    when a submitit launcher sets it; ``cores // n_jobs`` for the joblib launcher (``n_jobs=-1``: one job per
    core, joblib's rule for negative values); ``None`` (torch's default) for one job at a time."""
    if not launcher:
        return None
    cores = cores or available_cores()
    cpus = launcher.get("cpus_per_task")
    if cpus:
        return int(cpus)
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return None
    n_jobs = int(n_jobs)
    if n_jobs < 0:
        n_jobs = max(cores + 1 + n_jobs, 1)
    return max(cores // max(n_jobs, 1), 1)
