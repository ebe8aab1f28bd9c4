"""Save a W&B workspace view that compares the runs of one sweep: per-layer curves by loss, accuracy by method.

    python experiments/wandb_view.py --project sigprop --sweep 2024-05-01_12-00-00
    python experiments/wandb_view.py --project sigprop --sweep reproduce-mnist --layers signal layer01 layer02
    python experiments/wandb_view.py --project sigprop --sweep reproduce-mnist --from outputs/reproduce/mnist --dry-run

A sweep is what ``train.py -m`` runs (its id is the sweep folder's date and time, ``outputs/multirun/<date>/<time>``)
or a table of ``experiments/reproduce.py`` (``reproduce-<table>``); every run of it carries the tag
``sweep=<id>`` and its method as job type (``sigprop``, ``backprop``, ``fixed``). The view shows only
those runs and has

* one chart per layer (``signal``, ``layer01``, ...): its test accuracy per epoch, runs grouped by loss
  (``choices.loss``; mean with a min-max band);
* the output layer's test (and validation) accuracy per epoch, runs grouped by method, and a bar chart
  of the test accuracy at the best epoch (``best/test/acc``) by method.

The layers come from ``--layers``, or from the ``metrics.jsonl`` of the runs under ``--from`` (a sweep
or run folder), or else from the W&B runs of the sweep. Needs ``pip install wandb-workspaces`` (the
``wandb`` extra) and, to save, a W&B API key; ``--dry-run`` builds the view and prints it without saving.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws

LOSS, METHOD = "choices.loss", "method"


def layer_names(keys: Iterable[str]) -> list[str]:
    """The monitored layers (``signal``, ``layer01``, ...) of ``test/<layer>/acc`` keys, in network order."""
    found = {k.split("/")[1] for k in keys if k.startswith("test/") and k.endswith("/acc") and k.count("/") == 2}
    return sorted(found, key=lambda name: (name != "signal", name))


def layers_from_folders(folder: Path) -> list[str]:
    """The layers of every run (``metrics.jsonl``) at or under ``folder``."""
    keys: set[str] = set()
    for path in [folder / "metrics.jsonl"] if (folder / "metrics.jsonl").is_file() else folder.rglob("metrics.jsonl"):
        lines = path.read_text().splitlines()
        if lines:
            keys |= set(json.loads(lines[-1]))
    return layer_names(keys)


def layers_from_wandb(entity: str | None, project: str, sweep: str) -> list[str]:
    """The layers of the sweep's runs on the W&B server (their summaries' keys)."""
    import wandb

    api = wandb.Api()
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project", required=True, help="the W&B project of the runs")
    parser.add_argument("--entity", help="the W&B entity (default: your default entity)")
    parser.add_argument("--sweep", required=True, help="the sweep's id: <date>_<time> of a multirun, or reproduce-<table>")
    parser.add_argument("--layers", nargs="+", help="the layers to chart (default: from --from or the W&B runs)")
    parser.add_argument("--from", dest="folder", type=Path, help="a local sweep or run folder to read the layers from")
    parser.add_argument("--name", help="the view's name (default: sweep <id>)")
    parser.add_argument("--dry-run", action="store_true", help="build the view and print it; save nothing")
    args = parser.parse_args(argv)
    if args.layers:
        layers = args.layers
    elif args.folder is not None:
        layers = layers_from_folders(args.folder)
    else:
        layers = layers_from_wandb(args.entity, args.project, args.sweep)
    if not layers:
        print("error: no layer metrics (test/<layer>/acc) found; give --layers", file=sys.stderr)
        return 1
    entity = args.entity
    if entity is None and not args.dry_run:
        import wandb

        entity = wandb.Api().default_entity
    view = build_view(entity or "ENTITY", args.project, args.sweep, layers, args.name)
    if args.dry_run:
        print(view)
        return 0
    view.save()
    print(f"saved view {view.name!r}: {view.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
