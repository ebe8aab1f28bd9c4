"""Weights & Biases: one W&B run per training job, online when possible, offline into the run folder otherwise."""
from __future__ import annotations

import logging
import netrc
import os
import socket
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0


def base_url() -> str:
    """The W&B server (``WANDB_BASE_URL``, as wandb reads it)."""
    return os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)


def has_api_key(url: str) -> bool:
    """Whether wandb would find an API key for ``url``: ``WANDB_API_KEY`` or a ``.netrc`` entry (``NETRC`` or ``~/.netrc``)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    try:
        entry = netrc.netrc(str(path)).authenticators(urlsplit(url).netloc)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


PHASES = ("train", "val", "test")
# Groups whose option names a run's method and settings on the dashboard (tags ``loss=v9``, ...).
TAGGED_GROUPS = ("experiment", "dataset", "model", "propagator", "signal", "loss", "optimizer")


def layer_table_columns(metrics: Mapping[str, float]) -> list[str]:
    """``<phase>/loss``, ``<phase>/acc`` of every phase in ``metrics`` (``val`` only when there is a validation split)."""
    phases = [p for p in PHASES if any(k.startswith(f"{p}/") for k in metrics)]
    return [f"{p}/{m}" for p in phases for m in ("loss", "acc")]


def layer_table_rows(metrics: Mapping[str, float]) -> list[list[Any]]:
    """``[layer, <phase>/loss, <phase>/acc, ...]`` (``layer_table_columns``) for every ``<phase>/<layer>/<metric>`` key."""
    layers: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] in PHASES and parts[2] in ("loss", "acc"):
            layers.setdefault(parts[1], {})[f"{parts[0]}/{parts[2]}"] = value
    columns = layer_table_columns(metrics)
    return [[name] + [values.get(c) for c in columns] for name, values in layers.items()]


def summary_ops(key: str) -> str | None:
    """What W&B keeps of a metric in the run's summary: the highest and the last accuracy, the lowest and the
    last loss; ``None`` (the last value) for anything else."""
    if key.endswith("/acc"):
        return "max,last"
    if key.endswith("/loss"):
        return "min,last"
    return None


def run_tags(choices: Mapping[str, str], method: str | None) -> list[str]:
    """``group=option`` of the groups that say what a run is (``loss=v9``, ``propagator=loss``, ...); the signal
    and loss are left out of runs that build no signal (``method="backprop"``)."""
    unused = ("signal", "loss") if method == "backprop" else ()
    return [f"{g}={choices[g]}" for g in TAGGED_GROUPS if g in choices and g not in unused]


class WandbTracker:
    """Logs a run to W&B: the config, one point per epoch (``epoch`` is the x-axis), the highest accuracy and the
    lowest loss of every metric in the summary (``define_metric``) besides the values of the best epoch
    (``best/*``), and a per-layer table in the summary at the end.

    Runs are named after their settings, grouped by their settings without the seed (so W&B charts the
    mean over seeds), tagged with their config choices (``loss=v9``, ``signal=projection``, ...) and
    ``sweep=<id>``, and their job type is the method (``sigprop``, ``backprop``, ``fixed``), so the
    dashboard groups them by loss, signal or method in one click.

    ``mode="auto"`` follows ``WANDB_MODE`` when it is set; otherwise it goes online only with an API key
    and a reachable server, and else writes an offline run into ``<run_dir>/wandb/`` (upload it later
    with ``wandb sync``). Offline and disabled runs never ask for a login.

    Args:
        run_dir: the run's output folder (W&B writes into ``<run_dir>/wandb``).
        project, entity: where the run goes on the server.
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        group: runs that differ only in their seed share it (``None``: no group).
        name: the run's display name (``None``: W&B picks one).
        tags: labels shown on the dashboard, besides the config choices the run gets from ``start``.
        job_type: W&B's job type (``None``: the ``method`` of the config ``start`` gets).
        sweep: the id of the sweep the run belongs to (tag ``sweep=<id>``, config ``sweep``), or ``None``.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        project: str = "sigprop",
        entity: str | None = None,
        mode: str = "auto",
        group: str | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        job_type: str | None = None,
        sweep: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"logger.mode must be one of {MODES}, got {mode!r}")
        if mode == "online" and not has_api_key(base_url()):
            raise ValueError(
                "logger.mode=online needs a W&B API key: run `wandb login` or set WANDB_API_KEY "
                "(or use logger.mode=offline and `wandb sync` later)"
            )
        self.run_dir = Path(run_dir)
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.name, self.tags, self.job_type = group, name, list(tags), job_type
        self.sweep = sweep
        self.run: Any = None
        self.last: dict[str, float] = {}
        self.defined: set[str] = set()

    def resolve_mode(self) -> str:
        """The mode this run uses (see the class doc for ``auto``)."""
        if self.mode != "auto":
            return self.mode
        if os.environ.get("WANDB_MODE"):
            return os.environ["WANDB_MODE"]
        url = base_url()
        if has_api_key(url) and reachable(url):
            return "online"
        return "offline"

    def start(self, config: Mapping[str, Any]) -> None:
        import wandb  # imported here: it takes about a second, paid only by runs that use it

        mode = self.resolve_mode()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        method = config.get("method")
        tags = self.tags + run_tags(config.get("choices", {}), method) + ([f"sweep={self.sweep}"] if self.sweep else [])
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group,
            name=self.name,
            tags=list(dict.fromkeys(tags)),  # in order, without repeats
            job_type=self.job_type or method,
            config={**config, "sweep": self.sweep},
            dir=str(self.run_dir),
            mode=mode,  # type: ignore[arg-type]
            reinit="finish_previous",  # a sweep's jobs share the process: never log into the previous job's run
            settings=wandb.Settings(silent=True),  # one line of ours instead of W&B's banner and summary
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        where = f"{self.run.url}" if mode == "online" else f"{self.run.dir.removesuffix('/files')}"
        log.info("W&B run %s (%s): %s", self.run.id, mode, where)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key in metrics.keys() - self.defined - {"epoch"}:  # declared once, before the first value
            self.run.define_metric(key, step_metric="epoch", summary=summary_ops(key))
            self.defined.add(key)
        self.last = dict(metrics)
        self.run.log({**metrics, "epoch": step})

    def finish(self, summary: Mapping[str, float], failed: bool = False) -> None:
        if self.run is None:
            return
        import wandb

        try:
            # The final values are the summary's "last" already; the best epoch's values are not.
            for key, value in summary.items():
                if not key.startswith("final/"):
                    self.run.summary[key] = value
            rows = layer_table_rows(self.last)
            if rows:  # in the summary: a table logged with run.log would add a history row
                columns = ["layer", *layer_table_columns(self.last)]
                self.run.summary["layers"] = wandb.Table(columns=columns, data=rows)
        finally:
            offline = self.run.settings.mode == "offline"
            run_dir = self.run.dir.removesuffix("/files")
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
        if offline:
            log.info("W&B run saved offline; upload it with: wandb sync %s", run_dir)
