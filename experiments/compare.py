"""Compare finished runs side by side: a table (Markdown and CSV) and per-layer accuracy plots (PNG).

    python experiments/compare.py outputs/multirun/2024-05-01/12-00-00         # every job of a sweep
    python experiments/compare.py outputs/2024-05-01/*/ --out results/          # any runs, sweeps or not
    python experiments/compare.py outputs/multirun/seeds --average              # mean over seeds, with a band
    python experiments/compare.py outputs/multirun/a outputs/multirun/b --group-by loss signal  # one line per loss and signal

A run is a folder holding ``metrics.jsonl`` (written by train.py, one line per epoch). Its label is
its overrides from ``.hydra/overrides.yaml`` without those every compared run shares and without
the settings that do not change results (``threads``, ``logger.*``, ...: ``NEUTRAL`` in
``sigprop/engine/config.py``, the rule that also names its W&B run), plus the device and the number
of processes where runs differ in them (``defaults`` for a run of the app's defaults; runs that still
share a label get the settings that tell them apart). A run folder that cannot be compared (no epoch,
a damaged record, a null test accuracy) is listed as skipped with its reason. ``--average`` merges runs whose
labels differ only in ``seed``; ``--group-by KEY ...`` labels runs by those config choices or
settings (``loss``, ``signal``, ``optimizer.lr``, ...) and merges equal labels. A merged line is the
mean over its runs, with a band from their lowest to their highest value.

Writes ``runs.md``, ``runs.csv``, ``layers.png`` (every layer's test accuracy per epoch, one panel
per line) and ``test_acc.png`` (the output layer's test accuracy of every line, one panel) into ``--out``
(a new folder), by default ``<first path>/compare`` or, when an earlier call wrote there, ``compare-2``, ...
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sigprop.engine import summary
from sigprop.engine.config import changes_results
from sigprop.tracking.plots import Line, common_overrides, lines_of, plot_layers, plot_test_accuracy, save
from sigprop.tracking.records import RecordError, Run, load_run, run_folders

COLUMNS = ("run", "runs", "status", "epochs", "final test acc", "± (std)", "test acc at best epoch", "best epoch",
           "final train acc", "train samples/s")
OUTPUTS = ("runs.md", "runs.csv", "layers.png", "test_acc.png")


@dataclass
class Skipped:
    """A run folder left out of the comparison, and why (one line)."""

    folder: Path
    reason: str


def unusable(run: Run) -> str | None:
    """Why a run cannot be compared (no epoch, an epoch without a test accuracy), or ``None``."""
    ended = f"{run.status}: {run.summary['reason']}" if run.summary.get("reason") else run.status
    if not run.rows:
        return f"no finished epoch, no metrics.jsonl lines ({ended})"
    for row in run.rows:
        for key in ("test/acc", *(["val/acc"] if "val/acc" in row else [])):  # what the table and the best epoch read
            if not isinstance(row.get(key), (int, float)):
                value = "missing" if key not in row else "null (not a finite number)"
                return f"epoch {row['epoch']} of metrics.jsonl: {key} is {value} ({ended})"
    return None


def find_runs(paths: list[Path]) -> tuple[list[Run], list[Skipped]]:
    """Every run folder at or under ``paths`` (sorted; a sweep's jobs in job order), and those that cannot be
    compared (damaged or missing records, no finished epoch) with their reasons."""
    folders: list[Path] = []
    for path in paths:
        if not path.exists():
            raise SystemExit(f"error: {path}: no such folder")
        if not path.is_dir():
            raise SystemExit(f"error: {path}: not a folder (give run folders or sweep folders)")
        found = run_folders(path)
        if not found:
            raise SystemExit(f"error: {path}: no run in it or below it (no metrics.jsonl or .hydra/; is it a train.py "
                             "run or sweep folder?)")
        folders += [f for f in found if f not in folders]
    runs, skipped = [], []
    for folder in folders:
        try:
            run = load_run(folder)
        except RecordError as err:  # the line names the file; inside the run's folder, by its own name
            skipped.append(Skipped(folder, str(err).replace(f"{folder}{os.sep}", "")))
            continue
        reason = unusable(run)
        if reason is not None:
            skipped.append(Skipped(folder, reason))
            continue
        run.overrides = [o for o in run.overrides if changes_results(o)]
        runs.append(run)
    return runs, skipped


def status_of(line: Line) -> str:
    """How the line's runs ended: ``finished``, or the count of each ending (``2 finished, 1 interrupted``)."""
    counts = Counter(run.status for run in line.runs)
    if len(counts) == 1 and len(line.runs) == 1:
        return line.runs[0].status
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{n} {status}" for status, n in counts.items())


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
        "status": status_of(line),
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


def write_tables(lines: list[Line], common: list[str], out: Path, skipped: list[Skipped] = ()) -> list[dict[str, object]]:
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
    if any(row["status"] != "finished" for row in rows):
        text += ["", "Status: how the runs ended (summary.json): finished, interrupted (a signal), diverged (a loss "
                     "went non-finite), failed; unfinished: no summary.json yet (running, or killed)."]
    if skipped:
        text += ["", "Skipped (not compared):", ""] + [f"* `{s.folder}`: {s.reason}" for s in skipped]
    if any(len(line.runs) > 1 for line in lines):
        text += ["", "Rows of several runs: means over the runs (± their standard deviation); best epoch left out."]
    (out / "runs.md").write_text("\n".join(text) + "\n")
    return rows


def output_folder(out: Path | None, first: Path) -> Path:
    """Where to write: ``--out`` (refused in one line if it is a file, or holds an earlier comparison), else
    ``<first path>/compare``, or ``compare-2``, ``compare-3``, ... when an earlier call wrote there."""
    if out is not None:
        if out.exists() and not out.is_dir():
            raise SystemExit(f"error: --out {out}: is a file; give a folder for the table and plots")
        held = [name for name in OUTPUTS if (out / name).exists()]
        if held:
            raise SystemExit(f"error: --out {out}: holds an earlier comparison ({', '.join(held)}); give a new folder "
                             "or remove it")
        return out
    out, n = first / "compare", 1
    while any((out / name).exists() for name in OUTPUTS):
        n += 1
        out = first / f"compare-{n}"
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or sweep folders holding them")
    parser.add_argument("--out", type=Path, help="a new folder for the table and plots (default: <first path>/compare, "
                        "or compare-2, ... when that holds an earlier comparison)")
    parser.add_argument("--average", action="store_true", help="merge runs that differ only in seed: mean and band")
    parser.add_argument("--group-by", nargs="+", metavar="KEY", help="label runs by these config choices or settings "
                        "(e.g. loss signal optimizer.lr) and merge equal labels: mean and band")
    args = parser.parse_args(argv)
    out = output_folder(args.out, args.paths[0])  # refused before any reading
    runs, skipped = find_runs(args.paths)
    for s in skipped:
        print(f"skipped {s.folder}: {s.reason}", file=sys.stderr)
    if not runs:
        raise SystemExit(f"error: none of the {len(skipped)} runs found can be compared (see the skipped lines above)")
    lines = lines_of(runs, average=args.average, group_by=args.group_by)
    out.mkdir(parents=True, exist_ok=True)
    write_tables(lines, common_overrides(runs), out, skipped)
    save(plot_layers(lines), out / "layers.png")
    save(plot_test_accuracy(lines), out / "test_acc.png")
    print((out / "runs.md").read_text(), end="")
    print(f"wrote {', '.join(str(out / name) for name in OUTPUTS)}")


if __name__ == "__main__":
    main()
