"""A run's folder and name: claimed by one run before anything is written into it, cleaned of half-written
files, read for the run's record; and what the run is called (its name, group and sweep).

Two runs started into one folder (``hydra.run.dir=X`` twice, or two sweeps with one
``hydra.sweep.dir``) would write each other's ``.hydra/`` config over the other's metrics. The
first to create ``CLAIM_FILE`` there (an exclusive create: one winner, on every local or network
filesystem that honours ``O_EXCL``) owns the folder; the other stops before writing anything.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ..tracking.jsonl import METRICS_FILE, SUMMARY_FILE
from .checkpoint import CHECKPOINT_FILE
from .config import RESUMABLE, ConfigError, resumable
from .parallel import job_threads

CLAIM_FILE = "run.claim"
PART_SUFFIX = ".part"  # a file being written (checkpoint.pt.part, summary.json.part): renamed when complete


def claim(folder: Path, setting: str = "hydra.run.dir") -> None:
    """Make ``folder`` this process's: create it and ``CLAIM_FILE`` in it, or raise ``ConfigError`` if another
    run has claimed it already."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(folder / CLAIM_FILE, "x", encoding="utf-8") as f:
            f.write(f"pid {os.getpid()} on {socket.gethostname()} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    except FileExistsError:
        owner = (folder / CLAIM_FILE).read_text(encoding="utf-8", errors="replace").strip()
        raise ConfigError(
            f"{folder} belongs to another run ({owner or 'its ' + CLAIM_FILE}): give this one its own folder ({setting})"
        ) from None


def remove_parts(folder: Path) -> list[Path]:
    """Delete the half-written ``*.part`` files a killed or failed run left in ``folder``; returns them."""
    parts = sorted(folder.glob(f"*{PART_SUFFIX}")) if folder.is_dir() else []
    for part in parts:
        part.unlink(missing_ok=True)
    return parts


def check_new_run_dir(run_dir: Path, setting: str = "hydra.run.dir") -> None:
    """A run never writes into a folder that holds another run's metrics or checkpoint."""
    for name in (METRICS_FILE, CHECKPOINT_FILE):
        if (run_dir / name).exists():
            raise ConfigError(f"{run_dir} already holds a run ({name}): give the new run its own folder ({setting})")


def check_unused_folder(folder: str, setting: str, output_subdir: str | None = ".hydra") -> Path:
    """``folder`` (a ``hydra.run.dir``), checked before Hydra writes anything there: not empty (that would be the
    current directory) and holding no other run's record (its metrics, checkpoint, summary.json or Hydra's
    ``.hydra/``: a finished or failed run's folder stays as it is). Raises ``ConfigError`` naming ``setting``."""
    if not str(folder).strip():
        raise ConfigError(f"{setting} is empty: give the run a folder of its own ({setting}=outputs/<name>)")
    path = Path(folder)
    for name in (METRICS_FILE, CHECKPOINT_FILE, SUMMARY_FILE, *([output_subdir] if output_subdir else [])):
        if (path / name).exists():
            raise ConfigError(f"{path} already holds a run ({name}): give the new run its own folder ({setting})")
    return path


def job_record(run_dir: Path) -> tuple[str, str]:
    """``(status, reason)`` of the run in ``run_dir`` as its ``summary.json`` records it (``failed`` without one)."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        return str(summary.get("status", "failed")), str(summary.get("reason", ""))
    except (OSError, ValueError):
        return "failed", f"no readable {SUMMARY_FILE}"


# ----------------------------------------------------------------------------- resuming a run


def _is_override(arg: str) -> bool:
    # Hydra's flags start with "-"; their values (--config-name NAME) hold no "=".
    return not arg.startswith("-") and ("=" in arg or arg.startswith("~"))


def _key(override: Any) -> str:
    return str(override.key_or_group)


def resume_argv(argv: list[str]) -> list[str]:
    """``argv`` with the settings of the run that ``resume=<folder>`` names: the overrides it was started with
    (``<folder>/.hydra/overrides.yaml``) before the command line's, so ``python train.py resume=<folder>
    epochs=N`` continues that run as it was configured. On the command line only the settings that may change
    on resume (``config.RESUMABLE``) and Hydra's own are taken, besides repeats of the run's own overrides;
    any other is refused with one ``ConfigError`` naming it. Without such a file (a checkpoint.pt elsewhere,
    ``hydra.output_subdir=null``) ``argv`` is returned as it is, and the checkpoint's check compares them."""
    positions = [i for i, arg in enumerate(argv) if i > 0 and _is_override(arg)]
    parser = OverridesParser.create()
    given = [(arg, parser.parse_override(arg)) for arg in (argv[i] for i in positions)]
    resume = [o for _, o in given if _key(o) == "resume"]
    if not resume or resume[-1].is_sweep_override() or resume[-1].value() in (None, ""):
        return argv
    where = str(resume[-1].get_value_element_as_str())
    folder = Path(where).expanduser()
    if folder.is_file():
        folder = folder.parent
    recorded = folder / ".hydra" / "overrides.yaml"
    if not recorded.is_file():
        return argv
    try:
        saved_args = [str(a) for a in OmegaConf.to_container(OmegaConf.load(recorded))]  # type: ignore[union-attr]
        saved = [(arg, parser.parse_override(arg)) for arg in saved_args]
    except Exception as err:  # noqa: BLE001 - a damaged record: named in one line
        raise ConfigError(f"resume={where}: {recorded} is not a list of Hydra overrides ({err})".splitlines()[0]) from None
    own = {(_key(o), o.get_value_element_as_str()) for _, o in saved}

    def changeable(o: Any) -> bool:
        return resumable(_key(o)) or _key(o).startswith(("hydra.", "hydra/"))

    changed = [arg for arg, o in given if not changeable(o) and (_key(o), o.get_value_element_as_str()) not in own]
    if changed:
        allowed = ", ".join(f"{k}.*" if k == "logger" else k for k in RESUMABLE if k not in ("resume", "run_dir"))
        raise ConfigError(
            f"resume={where} continues that run with its own settings ({recorded}); {' '.join(changed)} would change "
            f"them: only {allowed} may change (to train other settings, start a new run without resume=)"
        )
    command = [arg for arg, o in given if changeable(o)]  # the repeats of the run's own overrides are left out
    set_here = {_key(parser.parse_override(arg)) for arg in command}
    kept = [arg for arg, o in saved if _key(o) not in set_here and _key(o) != "resume"]
    first = positions[0]
    rest = [arg for i, arg in enumerate(argv) if i > first and i not in positions]
    return argv[:first] + kept + command + rest


# ----------------------------------------------------------------------------- what a run is called


@dataclass
class RunInfo:
    """Where a run writes and what trackers call it: its name, the group of runs that differ from it only
    in their seed, and the sweep it belongs to."""

    run_dir: Path
    name: str | None = None
    group: str | None = None
    choices: dict[str, str] = field(default_factory=dict)
    sweep: str | None = None
    threads: int | None = None  # torch threads when ``threads`` is null: this job's share of a machine (parallel.py)


def choices_of(cfg: DictConfig | None = None) -> dict[str, str]:
    """The option chosen in every config group (``{"loss": "v15", ...}``), from Hydra's runtime record
    (in ``cfg`` if it holds the ``hydra`` node, else of the running job)."""
    if cfg is not None and "hydra" in cfg:
        node = cfg.hydra.runtime.choices
    elif HydraConfig.initialized():
        node = HydraConfig.get().runtime.choices
    else:
        return {}
    return {k: str(v) for k, v in node.items() if not k.startswith("hydra/") and v is not None}


def method_of(choices: Mapping[str, str]) -> str:
    """What trains the hidden layers, as tables and dashboards call it: ``sigprop`` (``propagator=loss``),
    else the propagator's option (``backprop``, ``fixed``)."""
    propagator = choices.get("propagator", "loss")
    return "sigprop" if propagator == "loss" else propagator


def seedless_name(overrides: list[str], exclude_keys: list[str]) -> str:
    """A run's name (its overrides, sorted, without those in ``exclude_keys``, as Hydra's ``override_dirname``)
    without its seed; ``default`` when nothing else is left."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    kept = sorted(str(o.input_line) for o in parsed if o.key_or_group not in {*exclude_keys, "seed"})
    return ",".join(kept) or "default"


def hydra_run_info() -> RunInfo:
    """The running Hydra job's folder, name (its overrides), group (its overrides without the seed), group
    choices, sweep id (multiruns only) and its share of the machine's threads (``parallel.job_threads``)."""
    hc = HydraConfig.get()
    sweep = None
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hc.sweep.dir)
        sweep = f"{sweep_dir.parent.name}_{sweep_dir.name}"  # e.g. 2024-05-01_12-00-00 for outputs/multirun/2024-05-01/12-00-00
    group = seedless_name(list(hc.overrides.task), list(hc.job.config.override_dirname.exclude_keys))
    threads = job_threads(hc.launcher) if hc.mode == RunMode.MULTIRUN else None
    return RunInfo(Path(hc.runtime.output_dir), hc.job.override_dirname or None, group, choices_of(), sweep, threads)


def started_jobs(sweep_dir: Path, output_subdir: str = ".hydra") -> list[tuple[int, list[str], Path]]:
    """``(job number, overrides, run folder)`` of every job of the sweep in ``sweep_dir`` that started (Hydra
    wrote its ``<output_subdir>/hydra.yaml``), by job number."""
    jobs = []
    for path in sweep_dir.glob(f"**/{output_subdir}/hydra.yaml"):
        node = OmegaConf.load(path).hydra
        jobs.append((int(node.job.num), list(node.overrides.task), path.parents[len(Path(output_subdir).parts)]))
    return sorted(jobs, key=lambda job: job[0])
