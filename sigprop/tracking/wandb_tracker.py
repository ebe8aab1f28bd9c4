"""Weights & Biases: one W&B run per training job, online when possible, offline into the run folder otherwise."""
from __future__ import annotations

import logging
import math
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
TIMEOUT_S = 30.0  # the most a run waits for the W&B server (probe and start together)
# How often wandb writes what it was given to the run's .wandb file (its default, 15 s, would let a SIGKILL
# lose the last epochs of a W&B record that metrics.jsonl and the checkpoint already hold).
FLUSH_INTERVAL_S = 1.0
# wandb's own exit code for an interrupted run (what it records for a KeyboardInterrupt).
EXIT_CODES = {"finished": 0, "interrupted": 255}


class TrackerError(RuntimeError):
    """A tracker cannot start or record the run; the message is one line that says why."""


def wandb_settings() -> Any:
    """wandb's settings as wandb itself reads them (``WANDB_*`` variables, its settings files), or a
    ``ValueError`` naming the bad value (e.g. ``WANDB_MODE=bogus``)."""
    from wandb.sdk import wandb_setup

    try:
        return wandb_setup.singleton().settings
    except ValueError as err:  # pydantic's ValidationError: one line per bad field
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip() and "errors.pydantic" not in line]
        mode = os.environ.get("WANDB_MODE")
        where = f"WANDB_MODE={mode}" if mode and lines and lines[0] == "mode" else "a W&B setting (WANDB_* or wandb's settings file)"
        raise ValueError(f"{where}: {' '.join(lines[1:] or lines)}") from None


def base_url() -> str:
    """The W&B server wandb would talk to (``WANDB_BASE_URL``, ``wandb login --host``, or its default)."""
    return str(wandb_settings().base_url)


def has_api_key(url: str) -> bool:
    """Whether wandb finds an API key for ``url``, in wandb's own order: this process's login, ``WANDB_API_KEY``
    (or ``WANDB_IDENTITY_TOKEN_FILE``), the ``.netrc`` entry ``wandb login`` wrote, wandb's settings."""
    from wandb import env
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib import wbauth

    if os.environ.get(env.API_KEY) or os.environ.get(env.IDENTITY_TOKEN_FILE):
        return True
    try:
        if wbauth.session_credentials(host=url) or wbauth.read_netrc_auth(host=url):
            return True
    except AuthenticationError as err:  # a malformed key in .netrc
        raise ValueError(f"the W&B API key for {url} in your .netrc is invalid: {err}") from None
    return bool(wandb_settings().api_key)


def unanswered(url: str, timeout: float) -> str | None:
    """Why the server at ``url`` does not answer an HTTP request within ``timeout`` seconds (``None`` when it
    answers, with any HTTP status): refused, not found, or silent, so the message says which."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except urllib.error.HTTPError:  # it answered, if only with an error status
        return None
    except ValueError as err:  # not an http(s) URL
        return f"{url} is not a server address ({err})"
    except (urllib.error.URLError, OSError) as err:
        cause = getattr(err, "reason", err)
        if isinstance(cause, (TimeoutError, socket.timeout)):
            return f"the W&B server {url} did not answer within {timeout:.0f} s"
        if isinstance(cause, ConnectionRefusedError):
            return f"the W&B server {url} refused the connection (nothing listens there)"
        return f"the W&B server {url} cannot be reached ({getattr(cause, 'strerror', None) or cause})"


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

    ``mode="auto"`` follows ``WANDB_MODE`` when it is set; otherwise it goes online when wandb finds an
    API key for its server and the server answers within ``timeout`` / 3 seconds, and else writes an
    offline run into ``<run_dir>/wandb/`` (upload it later with ``wandb sync``), with one warning when
    a key was found but the server did not answer. ``online`` (or ``WANDB_MODE=online``) without a key,
    or with a server that does not answer, is an error. A run never waits more than ``timeout`` seconds
    for the server, and never asks for a login.

    Args:
        run_dir: the run's output folder (W&B writes into ``<run_dir>/wandb``).
        project, entity: where the run goes on the server.
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        group: runs that differ only in their seed share it (``None``: no group).
        name: the run's display name (``None``: W&B picks one).
        tags: labels shown on the dashboard, besides the config choices the run gets from ``start``.
        job_type: W&B's job type (``None``: the ``method`` of the config ``start`` gets).
        sweep: the id of the sweep the run belongs to (tag ``sweep=<id>``, config ``sweep``), or ``None``.
        timeout: the most seconds to wait for the server (a third to probe it, the rest for ``wandb.init``).
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
        timeout: float = TIMEOUT_S,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"logger.mode must be one of {MODES}, got {mode!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ValueError(f"logger.timeout={timeout!r}: must be a positive number of seconds")
        self.run_dir = Path(run_dir)
        self.project, self.entity, self.mode, self.timeout = project, entity, mode, float(timeout)
        self.group, self.name, self.tags, self.job_type = group, name, list(tags), job_type
        self.sweep = sweep
        self.run: Any = None
        self.last: dict[str, float] = {}
        if self.chosen_mode() == "online" and not has_api_key(base_url()):
            setting = "logger.mode=online" if mode == "online" else f"WANDB_MODE={os.environ.get('WANDB_MODE')}"
            raise ValueError(
                f"{setting} needs a W&B API key for {base_url()}: run `wandb login` or set WANDB_API_KEY "
                "(or use logger.mode=offline and `wandb sync` later)"
            )
        self.defined: set[str] = set()

    def chosen_mode(self) -> str | None:
        """The mode the user chose (``logger.mode``, else ``WANDB_MODE``), as wandb names it; ``None`` for auto."""
        if self.mode != "auto":
            return self.mode
        if "WANDB_MODE" not in os.environ:
            return None
        if not os.environ["WANDB_MODE"].strip():  # wandb itself refuses it, in a long report, wherever it reads it
            raise ValueError("WANDB_MODE is set but empty: unset it (auto mode), or set it to online, offline or disabled")
        mode = str(wandb_settings().mode)  # validates WANDB_MODE
        return {"run": "online", "shared": "online", "dryrun": "offline"}.get(mode, mode)

    def resolve_mode(self) -> str:
        """The mode this run uses (see the class doc); raises ``TrackerError`` when online was chosen and the
        server does not answer."""
        chosen = self.chosen_mode()
        if chosen in ("offline", "disabled"):
            return chosen
        url = base_url()
        if chosen is None and not has_api_key(url):
            return "offline"
        probe = self.timeout / 3
        problem = unanswered(url, probe)
        if problem is None:
            return "online"
        return self._offline_or_fail(problem, chosen)

    def _offline_or_fail(self, problem: str, chosen: str | None) -> str:
        if chosen == "online":
            raise TrackerError(f"W&B online: {problem} (check the network, or use logger.mode=offline and `wandb sync` later)")
        log.warning("%s: this run's W&B record is saved offline (upload it later with `wandb sync`)", problem)
        return "offline"

    def start(self, config: Mapping[str, Any]) -> None:
        import wandb  # imported here: it takes about a second, paid only by runs that use it

        mode = self.resolve_mode()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.run = self._init(wandb, config, mode)
        except Exception as err:  # noqa: BLE001 - any failure to reach the server: offline (auto) or one line (online)
            if mode != "online":
                raise
            text = " ".join(str(err).split()) or type(err).__name__
            mode = self._offline_or_fail(f"W&B could not start the run online ({text})", self.chosen_mode())
            self.run = self._init(wandb, config, mode)
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        where = f"{self.run.url}" if mode == "online" else f"{self.run.dir.removesuffix('/files')}"
        log.info("W&B run %s (%s): %s", self.run.id, mode, where)

    def _init(self, wandb: Any, config: Mapping[str, Any], mode: str) -> Any:
        method = config.get("method")
        tags = self.tags + run_tags(config.get("choices", {}), method) + ([f"sweep={self.sweep}"] if self.sweep else [])
        return wandb.init(
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
            settings=wandb.Settings(**self._settings(wandb)),
        )

    def _settings(self, wandb: Any) -> dict[str, Any]:
        # One line of ours instead of W&B's banner and summary; the rest of the timeout for the server.
        settings: dict[str, Any] = {"silent": True, "init_timeout": self.timeout * 2 / 3}
        if "x_transaction_log_flush_interval" in getattr(wandb.Settings, "model_fields", {}):  # wandb >= 0.31
            settings["x_transaction_log_flush_interval"] = FLUSH_INTERVAL_S
        return settings

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key in metrics.keys() - self.defined - {"epoch"}:  # declared once, before the first value
            self.run.define_metric(key, step_metric="epoch", summary=summary_ops(key))
            self.defined.add(key)
        self.last = dict(metrics)
        self.run.log({**metrics, "epoch": step})

    def finish(self, summary: Mapping[str, Any], status: str = "finished") -> None:
        """Write the summary and close the W&B run: exit code 0 when finished; an interrupted run is marked
        preempted with wandb's exit code for an interruption (255); a diverged or failed one has exit code 1.
        The summary's ``status`` says which."""
        if self.run is None:
            return
        import wandb

        try:
            # The final values are the summary's "last" already; the best epoch's values are not.
            for key, value in summary.items():
                if not key.startswith("final/"):
                    self.run.summary[key] = value
            self.run.summary["status"] = status
            rows = layer_table_rows(self.last)
            if rows:  # in the summary: a table logged with run.log would add a history row
                columns = ["layer", *layer_table_columns(self.last)]
                self.run.summary["layers"] = wandb.Table(columns=columns, data=rows)
            if status == "interrupted":
                self.run.mark_preempting()
        finally:
            offline = self.run.settings.mode == "offline"
            run_dir = self.run.dir.removesuffix("/files")
            run, self.run = self.run, None
            run.finish(exit_code=EXIT_CODES.get(status, 1))
        if offline:
            log.info("W&B run saved offline; upload it with: wandb sync %s", run_dir)
