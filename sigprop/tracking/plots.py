"""Runs as lines of a comparison (one run, or the mean of several with a band) and their accuracy plots.

Shared by ``experiments/compare.py`` and ``experiments/reproduce.py``. Matplotlib draws into files only
(the ``Agg`` backend), so plotting works without a display.
"""
from __future__ import annotations

import math
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from .records import Run, override_key  # noqa: E402


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


def common_overrides(runs: list[Run]) -> list[str]:
    """The overrides every run shares (in the first run's order)."""
    if len(runs) < 2:
        return []
    shared = set.intersection(*(set(r.overrides) for r in runs))
    return [o for o in runs[0].overrides if o in shared]


# Settings that say where a run's files are or how it was watched: never what tells two runs apart.
NOT_LABELS = ("run_dir", "data_dir", "resume", "logger", "progress", "refresh_every", "print_config", "hydra")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}{key}.")
        return out
    return {prefix.rstrip("."): value}


def settings_of(run: Run) -> dict[str, str]:
    """Every setting of a run that may tell it from another (its composed config without paths and logging,
    and the number of processes it trained with: ``world_size``, 1 unless its summary says otherwise)."""
    values = _flatten(OmegaConf.to_container(run.config, resolve=False)) if run.config is not None else {}
    settings = {k: str(v) for k, v in values.items() if not any(k == n or k.startswith(f"{n}.") for n in NOT_LABELS)}
    settings["world_size"] = str(run.summary.get("world_size", 1))
    return settings


def differing(runs: list[Run], keys: list[str] | None = None, most: int = 4) -> list[list[str]]:
    """Per run, ``key=value`` of the settings (``keys``, or all of ``settings_of``) whose values differ among ``runs``."""
    each = [settings_of(run) for run in runs]
    names = keys if keys is not None else sorted(set().union(*each))
    varying = [k for k in names if len({s.get(k, "?") for s in each}) > 1][:most]
    return [[f"{k}={s.get(k, '?')}" for k in varying] for s in each]


def labels_of(runs: list[Run], average: bool = False) -> list[str]:
    """Each run's label: its overrides that not every run shares (without the seed when ``average``), plus the
    device and the number of processes where the runs differ in them; ``defaults`` for a run of the app's
    defaults. Runs that would still share a label (``average`` aside) get the settings that tell them apart,
    or their folders when they have none."""
    common = set(common_overrides(runs))
    context = differing(runs, ["device", "world_size"])
    labels = []
    for run, extra in zip(runs, context, strict=True):
        kept = [o for o in run.overrides if o not in common and not (average and override_key(o) == "seed")]
        head = kept or ([] if run.overrides or average else ["defaults"])  # a run of the app's defaults says so
        labels.append(" ".join([*head, *extra]) or ("all runs" if average else "the common settings"))
    if average:
        return labels
    for label in set(labels):
        same = [i for i, other in enumerate(labels) if other == label]
        if len(same) < 2:
            continue
        for i, extra in zip(same, differing([runs[i] for i in same]), strict=True):
            labels[i] = " ".join([label, *extra]) if extra else label
        for i in same:  # identical settings: the folder says which run is which
            if sum(labels[i] == labels[j] for j in same) > 1:
                labels[i] = f"{labels[i]} ({runs[i].folder.parent.name}/{runs[i].folder.name})"
    return labels


def lines_of(runs: list[Run], average: bool = False, group_by: list[str] | None = None) -> list[Line]:
    """The runs as table rows and plot lines: one per run (labelled by ``labels_of``), or merged by ``group_by``
    keys or (``average``) over seeds."""
    if group_by:
        labels = [" ".join(f"{key}={run.setting(key)}" for key in group_by) for run in runs]
    else:
        labels = labels_of(runs, average)
    lines: dict[str, Line] = {}
    for run, label in zip(runs, labels, strict=True):
        if label in lines and (average or group_by):
            lines[label].runs.append(run)
        else:
            lines[label if label not in lines else f"{label} ({run.folder})"] = Line(label, [run])
    return list(lines.values())


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


def epoch_axis(ax: Axes, lines: list[Line]) -> None:
    """Epochs on the x axis: whole numbers only, and a run of one epoch shown at its epoch, not between ticks."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs = {e for line in lines for run in line.runs for e in run.series("test/acc")}
    if len(epochs) == 1:  # one point: matplotlib would spread 0.95 .. 1.05 around it
        (epoch,) = epochs
        ax.set_xlim(epoch - 1, epoch + 1)
        ax.set_xticks([epoch - 1, epoch, epoch + 1] if epoch > 1 else [epoch, epoch + 1])


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
        epoch_axis(ax, [line])
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
    epoch_axis(ax, lines)
    ax.set_ylabel("test accuracy (output layer)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Test accuracy of the output layer, per epoch", fontsize=10)
    fit_titles(fig)
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` (PNG) and free it."""
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
