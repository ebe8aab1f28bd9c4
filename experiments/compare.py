"""Compare finished runs side by side: a table (Markdown and CSV) and per-layer accuracy plots (PNG).

    python experiments/compare.py multirun/2024-05-01/12-00-00            # every job of a sweep
    python experiments/compare.py outputs/2024-05-01/*/ --out results/     # any runs, sweeps or not

A run is a folder holding ``metrics.jsonl`` (written by train.py, one line per epoch); its label is
its overrides from ``.hydra/overrides.yaml``, without those that every compared run shares.
Writes ``runs.md``, ``runs.csv``, ``layers.png`` (every layer's test accuracy per epoch, one panel
per run) and ``test_acc.png`` (the output layer's test accuracy of every run, one panel) into ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

COLUMNS = ("run", "epochs", "final test acc", "best test acc", "best epoch", "final train acc", "train samples/s")


@dataclass
class Run:
    """One run's folder, overrides and metrics (one dict per epoch)."""

    folder: Path
    overrides: list[str]
    rows: list[dict[str, float]]
    label: str = ""

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """``(epochs, values)`` of ``key`` over the run (missing or null values skipped)."""
        points = [(r["epoch"], r[key]) for r in self.rows if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    def layers(self) -> list[str]:
        """Monitored layers in network order (``signal``, ``layer01``, ...), from the ``test/<layer>/acc`` keys."""
        return [k.split("/")[1] for k in self.rows[-1] if k.startswith("test/") and k.endswith("/acc") and k.count("/") == 2]


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run folder at or under ``paths`` (sorted; a sweep's jobs in job order)."""
    folders: list[Path] = []
    for path in paths:
        if not path.exists():
            raise SystemExit(f"error: {path}: no such folder")
        found = [path] if (path / "metrics.jsonl").is_file() else sorted(
            (p.parent for p in path.rglob("metrics.jsonl")), key=lambda p: [int(s) if s.isdigit() else s for s in p.parts]
        )
        if not found:
            raise SystemExit(f"error: {path}: no metrics.jsonl in it or below it (is it a train.py run or sweep folder?)")
        folders += [f for f in found if f not in folders]
    runs = []
    for folder in folders:
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        if not rows:
            print(f"skipping {folder}: no finished epoch yet", file=sys.stderr)
            continue
        overrides_file = folder / ".hydra" / "overrides.yaml"
        overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
        runs.append(Run(folder, [o for o in overrides if not o.startswith("hydra.")], rows))
    if not runs:
        raise SystemExit("error: none of the runs has a finished epoch")
    common = set.intersection(*(set(r.overrides) for r in runs)) if len(runs) > 1 else set()
    for run in runs:
        run.label = " ".join(o for o in run.overrides if o not in common) or run.folder.name
    return runs


def summary_row(run: Run) -> dict[str, object]:
    """One table row: final and best test accuracy, final train accuracy, mean training speed."""
    epochs, test_acc = run.series("test/acc")
    best = max(range(len(test_acc)), key=lambda i: test_acc[i]) if test_acc else None
    speeds = [v for v in run.series("train/samples_per_s")[1] if not math.isnan(v)]
    last = run.rows[-1]
    return {
        "run": run.label,
        "epochs": int(last["epoch"]),
        "final test acc": last.get("test/acc"),
        "best test acc": test_acc[best] if best is not None else None,
        "best epoch": int(epochs[best]) if best is not None else None,
        "final train acc": last.get("train/acc"),
        "train samples/s": sum(speeds) / len(speeds) if speeds else None,
    }


def fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:.0f}"
    return str(value)


def write_tables(runs: list[Run], out: Path) -> list[dict[str, object]]:
    """``runs.csv`` (full precision) and ``runs.md`` (rounded), one row per run."""
    rows = [summary_row(r) for r in runs]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(row[c]) for c in COLUMNS) + " |" for row in rows]
    common = sorted(set.intersection(*(set(r.overrides) for r in runs))) if len(runs) > 1 else []
    if common:
        lines += ["", f"All runs: `{' '.join(common)}`"]
    (out / "runs.md").write_text("\n".join(lines) + "\n")
    return rows


def plot_layers(runs: list[Run], out: Path) -> Path:
    """One panel per run: the test accuracy of every monitored layer and of the output layer, per epoch."""
    cols = min(len(runs), 3)
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), sharey=True, squeeze=False)
    for ax, run in zip(axes.flat, runs, strict=False):  # the grid may have more panels than runs
        layers = run.layers()
        colors = plt.cm.viridis([i / max(len(layers), 1) for i in range(len(layers))])
        for layer, color in zip(layers, colors, strict=True):
            ax.plot(*run.series(f"test/{layer}/acc"), color=color, marker=".", label=layer)
        ax.plot(*run.series("test/acc"), color="black", linewidth=2, marker="o", label="output")
        ax.set_title(run.label, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.suptitle("Test accuracy of every layer (signal and hidden layers: label-match accuracy of the local loss)", fontsize=10)
    fig.tight_layout()
    path = out / "layers.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_test_accuracy(runs: list[Run], out: Path) -> Path:
    """The output layer's test accuracy of every run, one line each."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in runs:
        ax.plot(*run.series("test/acc"), marker=".", label=run.label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (output layer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "test_acc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or sweep folders holding them")
    parser.add_argument("--out", type=Path, help="where to write the table and plots (default: <first path>/compare)")
    args = parser.parse_args(argv)
    runs = find_runs(args.paths)
    out = args.out or args.paths[0] / "compare"
    out.mkdir(parents=True, exist_ok=True)
    write_tables(runs, out)
    plot_layers(runs, out)
    plot_test_accuracy(runs, out)
    print((out / "runs.md").read_text(), end="")
    print(f"wrote {out / 'runs.md'}, {out / 'runs.csv'}, {out / 'layers.png'}, {out / 'test_acc.png'}")


if __name__ == "__main__":
    main()
