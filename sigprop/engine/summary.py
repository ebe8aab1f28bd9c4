"""A run's records: the console line of an epoch, the epoch the validation split picks, the run's summary."""
from __future__ import annotations

import math
from typing import Sequence

Metrics = dict[str, float]


def describe_epoch(row: Metrics, epochs: int) -> str:
    """One console line for an epoch: output-layer loss and accuracy (validation too, if any), every layer's
    test accuracy, speed, lr."""
    layers = " ".join(
        f"{key.split('/')[1]} {value:.4f}"
        for key, value in row.items()
        if key.startswith("test/") and key.endswith("/acc") and key.count("/") == 2
    )
    text = f"epoch {int(row['epoch'])}/{epochs}  train loss {row['train/loss']:.4f} acc {row['train/acc']:.4f}"
    if "val/acc" in row:
        text += f"  val loss {row['val/loss']:.4f} acc {row['val/acc']:.4f}"
    text += f"  test loss {row['test/loss']:.4f} acc {row['test/acc']:.4f}"
    if layers:
        text += f"  | layer test acc: {layers}"
    return text + f"  | {row['train/samples_per_s']:.0f} samples/s  lr {row['lr']:.3g}"


def selection_key(row: Metrics) -> str:
    """The accuracy that picks a run's best epoch: ``val/acc`` when there is a validation split, else ``test/acc``."""
    return "val/acc" if "val/acc" in row else "test/acc"


def best_row(history: Sequence[Metrics]) -> Metrics | None:
    """The epoch with the highest validation accuracy (the test accuracy without a validation split), the
    earliest on ties; ``None`` when no epoch has a finite value."""
    if not history:
        return None
    key = selection_key(history[-1])
    rows = [row for row in history if key in row and not math.isnan(row[key])]
    return max(rows, key=lambda row: (row[key], -row["epoch"])) if rows else None


def summarize(history: Sequence[Metrics]) -> Metrics:
    """Final and best values of a run.

    ``final/<key>``: the last epoch's values. ``best/epoch``: the epoch of the highest validation
    accuracy, or of the highest test accuracy when the run has no validation split (a choice made on
    the test set). ``best/<key>``: every value of that epoch, so ``best/test/acc`` is the test
    accuracy of the model the validation split picks.
    """
    if not history:
        return {}
    summary: Metrics = {"epochs": history[-1]["epoch"]}
    summary |= {f"final/{k}": v for k, v in history[-1].items() if k != "epoch"}
    best = best_row(history)
    if best is not None:
        summary["best/epoch"] = best["epoch"]
        summary |= {f"best/{k}": v for k, v in best.items() if k not in ("epoch", "lr") and not k.endswith("samples_per_s")}
    return summary


def describe_summary(summary: Metrics) -> str:
    """The run's last console line: the final test accuracy and the epoch the best-epoch rule picked."""
    text = f"final test accuracy {summary['final/test/acc']:.4f}"
    if "best/epoch" not in summary:
        return text
    if "best/val/acc" in summary:
        return text + (
            f" (best validation accuracy {summary['best/val/acc']:.4f} at epoch {int(summary['best/epoch'])},"
            f" test accuracy there {summary['best/test/acc']:.4f})"
        )
    return text + f" (best {summary['best/test/acc']:.4f} at epoch {int(summary['best/epoch'])})"
