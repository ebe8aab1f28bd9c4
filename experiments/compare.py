"""Compare finished runs side by side: a table (Markdown and CSV) and per-layer accuracy plots (PNG).

    python experiments/compare.py multirun/2024-05-01/12-00-00                 # every job of a sweep
    python experiments/compare.py outputs/2024-05-01/*/ --out results/          # any runs, sweeps or not
    python experiments/compare.py multirun/seeds --average                      # mean over seeds, with a band
    python experiments/compare.py multirun/a multirun/b --group-by loss signal  # one line per loss and signal

A run is a folder holding ``metrics.jsonl`` (written by train.py, one line per epoch). Its label is
its overrides from ``.hydra/overrides.yaml`` without those every compared run shares and without
the settings that do not change results (``threads``, ``logger.*``, ...: the ``exclude_keys`` of
the run's ``.hydra/hydra.yaml``, which also name its W&B run). ``--average`` merges runs whose
labels differ only in ``seed``; ``--group-by KEY ...`` labels runs by those config choices or
settings (``loss``, ``signal``, ``optimizer.lr``, ...) and merges equal labels. A merged line is the
mean over its runs, with a band from their lowest to their highest value.

Writes ``runs.md``, ``runs.csv``, ``layers.png`` (every layer's test accuracy per epoch, one panel
per line) and ``test_acc.png`` (the output layer's test accuracy of every line, one panel) into ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: works without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sigprop.engine import summary  # noqa: E402

COLUMNS = ("run", "runs", "epochs", "final test acc", "± (std)", "test acc at best epoch", "best epoch", "final train acc",
           "train samples/s")


@dataclass
class Run:
    """One run's folder, overrides, composed config and metrics (one dict per epoch)."""

    folder: Path
    overrides: list[str]
    rows: list[dict[str, float]]
    config: Any = None
    choices: dict[str, str] = field(default_factory=dict)

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


@dataclass
class Line:
    """What one table row and one plotted line show: a run, or the mean of several."""

    label: str
    runs: list[Run]

    def series(self, key: str) -> tuple[list[int], list[float], list[float], list[float]]:
        """``(epochs, mean, lowest, highest)`` of ``key`` over the epochs every run of the line has."""
        each = [run.series(key) for run in self.runs]
        epochs = sorted(set.intersection(*(set(s) for s in each))) if each else []
        values = [[s[e] for s in each] for e in epochs]
        return epochs, [statistics.fmean(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def ignored_keys(folder: Path) -> list[str]:
    """The settings a run's name leaves out because they do not change results (from its ``.hydra/hydra.yaml``)."""
    path = folder / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return []
    keys = OmegaConf.select(OmegaConf.load(path), "hydra.job.config.override_dirname.exclude_keys", default=None)
    return [str(k) for k in keys or []]


def changes_results(override: str, ignored: list[str]) -> bool:
    key = override_key(override)
    return not key.startswith("hydra.") and not any(key == k or key.startswith(f"{k}.") for k in ignored)


def load_run(folder: Path) -> Run | None:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        print(f"skipping {folder}: no finished epoch yet", file=sys.stderr)
        return None
    hydra_dir = folder / ".hydra"
    overrides = [str(o) for o in OmegaConf.load(hydra_dir / "overrides.yaml")] if (hydra_dir / "overrides.yaml").is_file() else []
    ignored = ignored_keys(folder)
    config = OmegaConf.load(hydra_dir / "config.yaml") if (hydra_dir / "config.yaml").is_file() else None
    choices = {}
    if (hydra_dir / "hydra.yaml").is_file():
        node = OmegaConf.select(OmegaConf.load(hydra_dir / "hydra.yaml"), "hydra.runtime.choices", default={}) or {}
        choices = {str(k): str(v) for k, v in node.items() if v is not None and not str(k).startswith("hydra/")}
    return Run(folder, [o for o in overrides if changes_results(o, ignored)], rows, config, choices)


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
    runs = [run for run in map(load_run, folders) if run is not None]
    if not runs:
        raise SystemExit("error: none of the runs has a finished epoch")
    return runs


def common_overrides(runs: list[Run]) -> list[str]:
    """The overrides every run shares (in the first run's order)."""
    if len(runs) < 2:
        return []
    shared = set.intersection(*(set(r.overrides) for r in runs))
    return [o for o in runs[0].overrides if o in shared]


def lines_of(runs: list[Run], average: bool = False, group_by: list[str] | None = None) -> list[Line]:
    """The runs as table rows and plot lines: one per run, or merged by ``group_by`` keys or (``average``) over seeds."""
    common = set(common_overrides(runs))
    lines: dict[str, Line] = {}
    for run in runs:
        if group_by:
            label = " ".join(f"{key}={run.setting(key)}" for key in group_by)
        else:
            kept = [o for o in run.overrides if o not in common and not (average and override_key(o) == "seed")]
            label = " ".join(kept) or ("all runs" if average else run.folder.name)
        if label in lines and (average or group_by):
            lines[label].runs.append(run)
        else:
            lines[label if label not in lines else f"{label} ({run.folder})"] = Line(label, [run])
    return list(lines.values())


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


def wrapped(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines of about ``width_in`` inches at ``fontsize`` points (0.6 em per character)."""
    chars = max(int(width_in * 72 / (0.6 * fontsize)), 10)
    return "\n".join(textwrap.wrap(text, chars)) or text


def fit_titles(fig: Figure) -> None:
    """Break the figure's title and every panel's title into lines until each fits its width (a long
    label would otherwise be cut at both sides of the figure)."""
    fig.canvas.draw()  # lay the figure out, so the panels have their final widths
    renderer = fig.canvas.get_renderer()
    titles = [(ax.title, ax.get_window_extent(renderer).width) for ax in fig.axes if ax.get_visible()]
    if fig.get_suptitle():
        titles.append((fig._suptitle, fig.bbox.width * 0.95))
    for title, width in titles:
        words = " ".join(title.get_text().split())
        chars = len(words)
        while chars > 10 and title.get_window_extent(renderer).width > width:
            chars = int(chars * 0.85)
            title.set_text("\n".join(textwrap.wrap(words, chars)))


def plot_line(ax: Axes, line: Line, key: str, **style: Any) -> None:
    """The mean of ``key`` over the line's runs, and the band between their lowest and highest values."""
    epochs, mean, low, high = line.series(key)
    ax.plot(epochs, mean, **style)
    if len(line.runs) > 1:
        ax.fill_between(epochs, low, high, color=style.get("color"), alpha=0.2, linewidth=0)


def plot_layers(lines: list[Line]) -> Figure:
    """One panel per line: the test accuracy of every monitored layer and of the output layer, per epoch."""
    cols = min(len(lines), 3)
    rows = math.ceil(len(lines) / cols)
    panel_w = 5.0
    fig, axes = plt.subplots(rows, cols, figsize=(panel_w * cols, 3.8 * rows + 0.6), sharey=True, squeeze=False,
                             layout="constrained")
    for ax, line in zip(axes.flat, lines, strict=False):  # the grid may have more panels than lines
        layers = line.runs[0].layers()
        colors = plt.cm.viridis([i / max(len(layers), 1) for i in range(len(layers))])
        for layer, color in zip(layers, colors, strict=True):
            plot_line(ax, line, f"test/{layer}/acc", color=color, marker=".", label=layer)
        plot_line(ax, line, "test/acc", color="black", linewidth=2, marker="o", label="output")
        runs = f" ({len(line.runs)} runs)" if len(line.runs) > 1 else ""
        ax.set_title(line.label + runs, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    for ax in list(axes.flat)[len(lines):]:
        ax.set_visible(False)
    title = "Test accuracy of every layer (signal and hidden layers: label-match accuracy of the local loss)"
    fig.suptitle(title, fontsize=10)
    fit_titles(fig)
    return fig


def plot_test_accuracy(lines: list[Line]) -> Figure:
    """The output layer's test accuracy of every line, in one panel."""
    fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for line, color in zip(lines, plt.cm.tab10.colors * (len(lines) // 10 + 1), strict=False):
        runs = f" ({len(line.runs)} runs)" if len(line.runs) > 1 else ""
        plot_line(ax, line, "test/acc", color=color, marker=".", label=wrapped(line.label + runs, 3.5, 8))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (output layer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
