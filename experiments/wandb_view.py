"""Save a W&B workspace view that compares the runs of one sweep: per-layer curves by loss, accuracy by method.

    python experiments/wandb_view.py --project sigprop --sweep 2024-05-01_12-00-00
    python experiments/wandb_view.py --project sigprop --sweep outputs/multirun/2024-05-01/12-00-00   # the same sweep
    python experiments/wandb_view.py --project sigprop --sweep reproduce-mnist --layers signal layer01 layer02
    python experiments/wandb_view.py --project sigprop --sweep reproduce-mnist --from outputs/reproduce/mnist --dry-run

A sweep is what ``train.py -m`` runs (its id is the sweep folder's date and time, ``<date>_<time>`` of
``outputs/multirun/<date>/<time>``: either form is accepted, and a folder also gives the layers) or a
table of ``experiments/reproduce.py`` (``reproduce-<table>``, or its folder ``outputs/reproduce/<table>``);
every run of it carries the tag
``sweep=<id>`` and its method as job type (``sigprop``, ``backprop``, ``fixed``). The view shows only
those runs and has

* one chart per layer (``signal``, ``layer01``, ...): its test accuracy per epoch, runs grouped by loss
  (``choices.loss``; mean with a min-max band);
* the output layer's test (and validation) accuracy per epoch, runs grouped by method, and a bar chart
  of the test accuracy at the best epoch (``best/test/acc``) by method.

The layers come from ``--layers``, or from the ``metrics.jsonl`` of the runs under ``--from`` (a sweep
or run folder, or the folder given as ``--sweep``), or else from the W&B runs of the sweep. Needs
``pip install wandb-workspaces`` (the ``wandb`` extra) and, to save, a W&B API key and a server that
answers (each missing one is one line); ``--dry-run`` builds the view and prints it without saving.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterable

from sigprop.engine.config import one_line
from sigprop.tracking.records import RecordError, read_metrics, run_folders
from sigprop.tracking.wandb_tracker import base_url, has_api_key, unanswered

try:
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
except ImportError:  # said in one line by main
    wr = ws = None

LOSS, METHOD = "choices.loss", "method"
SERVER_TIMEOUT_S = 10.0


class ViewError(Exception):
    """Why the view cannot be built or saved, in one line."""


def layer_names(keys: Iterable[str]) -> list[str]:
    """The monitored layers (``signal``, ``layer01``, ...) of ``test/<layer>/acc`` keys, in network order."""
    found = {k.split("/")[1] for k in keys if k.startswith("test/") and k.endswith("/acc") and k.count("/") == 2}
    return sorted(found, key=lambda name: (name != "signal", name))


def layers_from_folders(folder: Path, option: str = "--from") -> list[str]:
    """The layers of every run (``metrics.jsonl``) at or under ``folder`` (runs with damaged records left out)."""
    if not folder.is_dir():
        raise ViewError(f"{option} {folder}: no such folder")
    keys: set[str] = set()
    for run in run_folders(folder):
        try:
            rows = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
        except RecordError as err:
            print(f"skipped: {err}", file=sys.stderr)
            continue
        if rows:
            keys |= set(rows[-1])
    return layer_names(keys)


def sweep_id(value: str) -> tuple[str, Path | None]:
    """The sweep's id and, when ``value`` is a folder, that folder: ``2024-05-01_12-00-00`` as it is, a multirun
    folder ``outputs/multirun/2024-05-01/12-00-00`` as ``2024-05-01_12-00-00``, a reproduce.py table folder
    ``outputs/reproduce/mnist`` as ``reproduce-mnist``."""
    path = Path(value)
    if "/" not in value and not path.is_dir():
        return value, None
    if path.name.isdigit() and (path / ".hydra").is_dir():  # one job of a sweep: the sweep it belongs to
        path = path.parent
    path = path.absolute()
    if path.parent.name == "reproduce":
        return f"reproduce-{path.name}", path
    return f"{path.parent.name}_{path.name}", path


def check_server() -> None:
    """``ViewError`` unless wandb finds an API key for its server and the server answers."""
    try:
        url = base_url()
        if not has_api_key(url):
            raise ViewError(f"no W&B API key for {url}: run `wandb login` or set WANDB_API_KEY (--dry-run with "
                            "--layers or --from builds the view without one)")
    except ValueError as err:  # a bad WANDB_* setting, a malformed key
        raise ViewError(str(err)) from None
    problem = unanswered(url, SERVER_TIMEOUT_S)
    if problem is not None:
        raise ViewError(f"{problem}: check the network or WANDB_BASE_URL")


def layers_from_wandb(entity: str | None, project: str, sweep: str) -> list[str]:
    """The layers of the sweep's runs on the W&B server (their summaries' keys)."""
    import wandb

    check_server()

    api = wandb.Api(timeout=SERVER_TIMEOUT_S)
    path = f"{entity}/{project}" if entity else project
    keys: set[str] = set()
    for run in api.runs(path, filters={"tags": {"$in": [f"sweep={sweep}"]}}):
        keys |= set(run.summary.keys())
    return layer_names(keys)


def build_view(entity: str, project: str, sweep: str, layers: list[str], name: str | None = None) -> ws.Workspace:
    """The workspace view of ``sweep`` (built, not saved)."""
    epoch = "epoch"
    per_layer = [
        wr.LinePlot(title=f"{layer}: test accuracy by loss", x=epoch, y=[f"test/{layer}/acc"],
                    groupby=wr.Config(LOSS), groupby_aggfunc="mean", groupby_rangefunc="minmax")
        for layer in layers
    ]
    by_method = [
        wr.LinePlot(title="output: test accuracy by method", x=epoch, y=["test/acc"],
                    groupby=wr.Config(METHOD), groupby_aggfunc="mean", groupby_rangefunc="minmax"),
        wr.LinePlot(title="output: validation accuracy by method", x=epoch, y=["val/acc"],
                    groupby=wr.Config(METHOD), groupby_aggfunc="mean", groupby_rangefunc="minmax"),
        wr.BarPlot(title="test accuracy at the best epoch, by method", metrics=["best/test/acc"],
                   groupby=wr.Config(METHOD), groupby_aggfunc="mean", groupby_rangefunc="minmax"),
    ]
    columns = max(1, min(len(layers), 3))
    panel_settings = ws.SectionPanelSettings(x_axis=epoch)
    return ws.Workspace(
        entity=entity,
        project=project,
        name=name or f"sweep {sweep}",
        sections=[
            ws.Section(name="Per-layer test accuracy", panels=per_layer, is_open=True, panel_settings=panel_settings,
                       layout_settings=ws.SectionLayoutSettings(columns=columns, rows=max(1, -(-len(layers) // columns)))),
            ws.Section(name="Output accuracy by method", panels=by_method, is_open=True, panel_settings=panel_settings,
                       layout_settings=ws.SectionLayoutSettings(columns=3, rows=1)),
        ],
        settings=ws.WorkspaceSettings(x_axis=epoch, max_runs=100),  # a table of 5 methods x 3 seeds x 2 networks: 30 runs
        # No grouping of the runs table: each chart groups its runs itself (by loss, or by method).
        runset_settings=ws.RunsetSettings(
            filters=ws.And(ws.Tags().isin([f"sweep={sweep}"])),
            pinned_columns=["summary:best/test/acc", "summary:best/val/acc", "summary:best/epoch"],
        ),
    )


def describe(view: Any) -> str:
    """The view as a reader checks it: where it goes, which runs it shows, every section and chart."""
    filters = getattr(view.runset_settings, "filters", None)
    lines = [f"view {view.name!r} in {view.entity}/{view.project}",
             f"  runs: {filters} (at most {view.settings.max_runs})"]
    for section in view.sections:
        lines.append(f"  section {section.name!r} ({section.layout_settings.columns} columns):")
        for panel in section.panels:
            metrics = getattr(panel, "y", None) or getattr(panel, "metrics", None) or []
            group = getattr(getattr(panel, "groupby", None), "name", None)
            kind = "line" if type(panel).__name__ == "LinePlot" else "bar"
            lines.append(f"    {kind:4s} {panel.title}: {', '.join(map(str, metrics))}"
                         + (f", runs grouped by {group} (mean, min-max band)" if group else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", required=True, help="the W&B project of the runs")
    parser.add_argument("--entity", help="the W&B entity (default: your default entity)")
    parser.add_argument("--sweep", required=True, help="the sweep: <date>_<time> of a multirun or its folder "
                        "(outputs/multirun/<date>/<time>), or reproduce-<table> or its folder")
    parser.add_argument("--layers", nargs="+", help="the layers to chart (default: from --from or the W&B runs)")
    parser.add_argument("--from", dest="folder", type=Path, help="a local sweep or run folder to read the layers from")
    parser.add_argument("--name", help="the view's name (default: sweep <id>)")
    parser.add_argument("--dry-run", action="store_true", help="build the view and print it; save nothing")
    args = parser.parse_args(argv)
    try:
        return make_view(args)
    except ViewError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def make_view(args: argparse.Namespace) -> int:
    """Build the view ``args`` asks for; print it (``--dry-run``) or save it."""
    if ws is None:
        raise ViewError("needs wandb-workspaces: pip install -e '.[wandb]'")
    sweep, sweep_folder = sweep_id(args.sweep)
    if args.layers:
        layers = args.layers
    elif args.folder is not None:
        layers = layers_from_folders(args.folder)
    elif sweep_folder is not None:
        layers = layers_from_folders(sweep_folder, "--sweep")
    else:
        layers = layers_with_errors(args.entity, args.project, sweep)
    if not layers:
        raise ViewError("no layer metrics (test/<layer>/acc) found; give --layers")
    entity = args.entity
    if args.dry_run:
        print(describe(build_view(entity or "<your default entity>", args.project, sweep, layers, args.name)))
        print("(not saved: --dry-run)")
        return 0
    check_server()
    import wandb

    try:
        entity = entity or wandb.Api(timeout=SERVER_TIMEOUT_S).default_entity
        view = build_view(entity, args.project, sweep, layers, args.name)
        view.save()
    except Exception as err:  # wandb's and the workspace API's errors (auth, network, project) in one line
        raise ViewError(f"W&B refused the view: {one_line(err)}") from None
    print(f"saved view {view.name!r}: {view.url}")
    return 0


def layers_with_errors(entity: str | None, project: str, sweep: str) -> list[str]:
    """``layers_from_wandb`` with W&B's errors as one line."""
    try:
        return layers_from_wandb(entity, project, sweep)
    except ViewError:
        raise
    except Exception as err:  # wandb's errors (auth, network, unknown project) in one line
        raise ViewError(f"W&B could not list the runs of sweep {sweep}: {one_line(err)}") from None


if __name__ == "__main__":
    sys.exit(main())
