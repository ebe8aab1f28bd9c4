"""Reading what a run folder holds: ``metrics.jsonl``, ``summary.json``, ``.hydra/`` (overrides, config,
group choices), and the machine a run used, in words.

The scripts of ``experiments/`` read runs through this module. A damaged record is a ``RecordError``
whose message is one line naming the file, so a script can list the run as skipped and go on.
"""
from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .jsonl import METRICS_FILE, SUMMARY_FILE

Metrics = dict[str, Any]


class RecordError(ValueError):
    """A run folder whose records cannot be read; the message is one line naming the file."""


def override_key(override: str) -> str:
    """The setting an override sets (``+optimizer.fused=true`` -> ``optimizer.fused``)."""
    return override.split("=", 1)[0].lstrip("+~")


def read_metrics(folder: Path) -> list[Metrics]:
    """The epochs of ``<folder>/metrics.jsonl``, one dict each (``RecordError`` if missing or not JSON)."""
    path = Path(folder) / METRICS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecordError(f"{path}: cannot be read ({err})") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise RecordError(f"{path} line {number}: not JSON ({err})") from None
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), (int, float)):
            raise RecordError(f"{path} line {number}: not an epoch's metrics (a JSON object with an epoch)")
        rows.append(row)
    return rows


def read_summary(folder: Path) -> dict[str, Any]:
    """``<folder>/summary.json`` (``{}`` when the run has none yet; ``RecordError`` if it is not a JSON object)."""
    path = Path(folder) / SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RecordError(f"{path}: not JSON ({err})") from None
    if not isinstance(value, dict):
        raise RecordError(f"{path}: not a JSON object")
    return value


def _load_yaml(path: Path) -> Any:
    try:
        return OmegaConf.load(path)
    except yaml.MarkedYAMLError as err:  # its message repeats the path; the problem and where it is suffice
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise RecordError(f"{path}: not readable YAML ({err.problem or err.context}{where})") from None
    except (OSError, OmegaConfBaseException, yaml.YAMLError, ValueError) as err:
        raise RecordError(f"{path}: not readable YAML ({' '.join(str(err).split())})") from None


def read_overrides(folder: Path) -> list[str]:
    """The command line's overrides of a run (``.hydra/overrides.yaml``; ``[]`` without one)."""
    path = Path(folder) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    node = _load_yaml(path)
    if not isinstance(node, ListConfig):
        raise RecordError(f"{path}: not a list of overrides")
    return [str(o) for o in node]


def read_config(folder: Path) -> DictConfig | None:
    """The run's composed config (``.hydra/config.yaml``), or ``None`` without one."""
    path = Path(folder) / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    node = _load_yaml(path)
    if not isinstance(node, DictConfig):
        raise RecordError(f"{path}: not a config (a mapping of settings)")
    return node


def read_choices(folder: Path) -> dict[str, str]:
    """The option of every config group the run used (``{"loss": "v15", ...}``, from ``.hydra/hydra.yaml``)."""
    path = Path(folder) / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    node = OmegaConf.select(_load_yaml(path), "hydra.runtime.choices", default=None) or {}
    return {str(k): str(v) for k, v in node.items() if v is not None and not str(k).startswith("hydra/")}


@dataclass
class Run:
    """One run's folder, overrides, composed config, group choices, summary and metrics (one dict per epoch)."""

    folder: Path
    overrides: list[str]
    rows: list[Metrics]
    config: Any = None
    choices: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """How the run ended (``finished``, ``interrupted``, ``diverged``, ``failed``), or ``unfinished`` when its
        folder has no ``summary.json`` yet (still running, or killed without a chance to write one)."""
        return str(self.summary.get("status", "unfinished"))

    def series(self, key: str) -> dict[int, float]:
        """``{epoch: value}`` of ``key`` over the run (missing or null values skipped)."""
        return {int(r["epoch"]): r[key] for r in self.rows if r.get(key) is not None}

    def layers(self) -> list[str]:
        """Monitored layers in network order (``signal``, ``layer01``, ...), from the ``test/<layer>/acc`` keys."""
        return [k.split("/")[1] for k in self.rows[-1] if k.startswith("test/") and k.endswith("/acc") and k.count("/") == 2]

    def setting(self, key: str) -> str:
        """A config group's option (``loss`` -> ``v9``) or a setting's value (``optimizer.lr`` -> ``0.001``)."""
        if key in self.choices:
            return str(self.choices[key])
        value = OmegaConf.select(self.config, key, default=None) if self.config is not None else None
        return "?" if value is None else str(value)


def load_run(folder: Path) -> Run:
    """Every record of the run in ``folder`` (``RecordError`` naming the file that cannot be read); a run that
    ended before its first epoch, without ``metrics.jsonl``, has no rows."""
    folder = Path(folder)
    rows = read_metrics(folder) if (folder / METRICS_FILE).exists() else []
    return Run(folder, read_overrides(folder), rows, read_config(folder), read_choices(folder), read_summary(folder))


def run_folders(path: Path) -> list[Path]:
    """The run folders at or under ``path``: those holding ``metrics.jsonl`` or ``.hydra/`` (a run that failed
    before its first epoch has only the latter), in job order (``2`` before ``10``)."""
    path = Path(path)
    if (path / METRICS_FILE).is_file() or (path / ".hydra").is_dir():
        return [path]
    found = {p.parent for p in path.rglob(METRICS_FILE)} | {p.parent for p in path.rglob(".hydra") if p.is_dir()}
    found = {f for f in found if not any(parent in found for parent in f.parents)}  # not a run's own sub-folders
    return sorted(found, key=lambda p: [int(s) if s.isdigit() else s for s in p.parts])


def machine(device: Any) -> str:
    """The machine in words: the GPU's name for a CUDA ``device``, else the CPU model and core count."""
    if getattr(device, "type", device) == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU, {model}"
