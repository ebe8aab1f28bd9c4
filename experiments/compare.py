"""Compare finished runs side by side: a table (Markdown and CSV) and per-layer accuracy plots (PNG).

    python experiments/compare.py outputs/multirun/2024-05-01/12-00-00         # every job of a sweep
    python experiments/compare.py outputs/2024-05-01/*/ --out results/          # any runs, sweeps or not
    python experiments/compare.py outputs/multirun/seeds --average              # mean over seeds, with a band
    python experiments/compare.py outputs/multirun/a outputs/multirun/b --group-by loss signal  # one line per loss and signal

A run is a folder holding ``metrics.jsonl`` (written by train.py, one line per epoch). Its label is
its overrides from ``.hydra/overrides.yaml`` without those every compared run shares and without
the settings that do not change results (``threads``, ``logger.*``, ...: ``NEUTRAL`` in
``sigprop/engine/config.py``, the rule that also names its W&B run). ``--average`` merges runs whose
labels differ only in ``seed``; ``--group-by KEY ...`` labels runs by those config choices or
settings (``loss``, ``signal``, ``optimizer.lr``, ...) and merges equal labels. A merged line is the
mean over its runs, with a band from their lowest to their highest value.

Writes ``runs.md``, ``runs.csv``, ``layers.png`` (every layer's test accuracy per epoch, one panel
per line) and ``test_acc.png`` (the output layer's test accuracy of every line, one panel) into ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from pathlib import Path

from sigprop.engine import summary
from sigprop.engine.config import changes_results
from sigprop.tracking.plots import Line, common_overrides, lines_of, plot_layers, plot_test_accuracy, save
from sigprop.tracking.records import RecordError, Run, load_run, override_key, run_folders

COLUMNS = ("run", "runs", "epochs", "final test acc", "± (std)", "test acc at best epoch", "best epoch", "final train acc",
           "train samples/s")

def find_runs(paths: list[Path]) -> list[Run]:
    """Every run folder at or under ``paths`` (sorted; a sweep's jobs in job order)."""
    folders: list[Path] = []
    for path in paths:
        if not path.exists():
            raise SystemExit(f"error: {path}: no such folder")
        found = run_folders(path)
        if not found:
            raise SystemExit(f"error: {path}: no metrics.jsonl in it or below it (is it a train.py run or sweep folder?)")
        folders += [f for f in found if f not in folders]
    runs = []
    for folder in folders:
        run = load_run(folder)
        if not run.rows:
            print(f"skipping {folder}: no finished epoch yet", file=sys.stderr)
            continue
        run.overrides = [o for o in run.overrides if changes_results(o)]
        runs.append(run)
    if not runs:
        raise SystemExit("error: none of the runs has a finished epoch")
    return runs


def summary_row(line: Line) -> dict[str, object]:
    """One table row: final test accuracy and at the best epoch (means over the line's runs), train accuracy and speed."""
    finals = [run.rows[-1].get("test/acc") for run in line.runs]
    finals = [f for f in finals if f is not None]
    # The epoch of the best validation accuracy (of the best test accuracy in runs without a validation split),
    # by the rule of the runs' summary.json.
    best_rows = [row for row in (summary.best_row(run.rows) for run in line.runs) if row is not None and "test/acc" in row]
    bests = [(int(row["epoch"]), row["test/acc"]) for row in best_rows]
    train = [run.rows[-1].get("train/acc") for run in line.runs if run.rows[-1].get("train/acc") is not None]
    speeds = [v for run in line.runs for v in run.series("train/samples_per_s").values() if not math.isnan(v)]
    return {
        "run": line.label,
        "runs": len(line.runs),
        "epochs": min(int(run.rows[-1]["epoch"]) for run in line.runs),
        "final test acc": statistics.fmean(finals) if finals else None,
        "± (std)": statistics.stdev(finals) if len(finals) > 1 else None,
        "test acc at best epoch": statistics.fmean(b[1] for b in bests) if bests else None,
        "best epoch": bests[0][0] if len(bests) == 1 else None,
        "final train acc": statistics.fmean(train) if train else None,
        "train samples/s": statistics.fmean(speeds) if speeds else None,
    }


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:.0f}"
    return str(value)


def write_tables(lines: list[Line], common: list[str], out: Path) -> list[dict[str, object]]:
    """``runs.csv`` (full precision) and ``runs.md`` (rounded), one row per line."""
    rows = [summary_row(line) for line in lines]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    text = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    text += ["| " + " | ".join(fmt(row[c]) for c in COLUMNS) + " |" for row in rows]
    if common:
        text += ["", f"All runs: `{' '.join(common)}`"]
    text += ["", "Best epoch: the one of the highest validation accuracy (of the highest test accuracy in runs "
                 "without a validation split: a choice made on the test set)."]
    if any(len(line.runs) > 1 for line in lines):
        text += ["", "Rows of several runs: means over the runs (± their standard deviation); best epoch left out."]
    (out / "runs.md").write_text("\n".join(text) + "\n")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or sweep folders holding them")
    parser.add_argument("--out", type=Path, help="where to write the table and plots (default: <first path>/compare)")
    parser.add_argument("--average", action="store_true", help="merge runs that differ only in seed: mean and band")
    parser.add_argument("--group-by", nargs="+", metavar="KEY", help="label runs by these config choices or settings "
                        "(e.g. loss signal optimizer.lr) and merge equal labels: mean and band")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    lines = lines_of(runs, average=args.average, group_by=args.group_by)
    out = args.out or args.paths[0] / "compare"
    out.mkdir(parents=True, exist_ok=True)
    write_tables(lines, common_overrides(runs), out)
    save(plot_layers(lines), out / "layers.png")
    save(plot_test_accuracy(lines), out / "test_acc.png")
    print((out / "runs.md").read_text(), end="")
    print(f"wrote {out / 'runs.md'}, {out / 'runs.csv'}, {out / 'layers.png'}, {out / 'test_acc.png'}")


if __name__ == "__main__":
    main()
