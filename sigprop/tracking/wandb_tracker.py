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


def layer_table_rows(metrics: Mapping[str, float]) -> list[list[Any]]:
    """``[layer, train loss, train acc, test loss, test acc]`` for every ``<phase>/<layer>/<metric>`` key."""
    layers: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] in ("train", "test") and parts[2] in ("loss", "acc"):
            layers.setdefault(parts[1], {})[f"{parts[0]}/{parts[2]}"] = value
    columns = ("train/loss", "train/acc", "test/loss", "test/acc")
    return [[name] + [values.get(c) for c in columns] for name, values in layers.items()]


class WandbTracker:
    """Logs a run to W&B: the config, one point per epoch (``epoch`` is the x-axis), best values in the summary,
    and a per-layer table at the end.

    ``mode="auto"`` follows ``WANDB_MODE`` when it is set; otherwise it goes online only with an API key
    and a reachable server, and else writes an offline run into ``<run_dir>/wandb/`` (upload it later
    with ``wandb sync``). Offline and disabled runs never ask for a login.

    Args:
        run_dir: the run's output folder (W&B writes into ``<run_dir>/wandb``).
        project, entity: where the run goes on the server.
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        group: runs of one sweep share it (``None``: no group).
        name: the run's display name (``None``: W&B picks one).
        tags: labels shown on the dashboard.
        job_type: W&B's job type (e.g. ``train``).
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
        job_type: str | None = "train",
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
        self.run: Any = None
        self.last: dict[str, float] = {}

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
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group,
            name=self.name,
            tags=self.tags,
            job_type=self.job_type,
            config=dict(config),
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
        self.last = dict(metrics)
        self.run.log({**metrics, "epoch": step})

    def finish(self, summary: Mapping[str, float], failed: bool = False) -> None:
        if self.run is None:
            return
        import wandb

        try:
            for key, value in summary.items():
                self.run.summary[key] = value
            rows = layer_table_rows(self.last)
            if rows:
                table = wandb.Table(columns=["layer", "train/loss", "train/acc", "test/loss", "test/acc"], data=rows)
                self.run.log({"layers": table, "epoch": self.last.get("epoch", 0)})
        finally:
            offline = self.run.settings.mode == "offline"
            run_dir = self.run.dir.removesuffix("/files")
            self.run.finish(exit_code=1 if failed else 0)
            self.run = None
        if offline:
            log.info("W&B run saved offline; upload it with: wandb sync %s", run_dir)
