"""One pass over the batches of a phase, with every layer's metrics; the console line of an epoch; a run's summary.

Metrics are summed on the device during a phase and read once at its end (a read waits for the
device), so a phase adds no synchronisation per step; the progress bar, when shown, reads its
running values every ``refresh_every`` steps. ``train.py`` runs the epochs.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterator, Protocol, Sequence

from torch import Tensor
from tqdm import tqdm

from ..monitors.monitor import Group, LossAccuracySums, Monitor
from .step import TrainStep

log = logging.getLogger(__name__)

Metrics = dict[str, float]


class Batches(Protocol):
    """What the loop iterates: ``(x, y)`` batches with a known count (e.g. ``sigprop.data.loader.TensorLoader``)."""

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]: ...

    def __len__(self) -> int: ...


class OutputMeter(LossAccuracySums):
    """The output layer's summed loss and correct predictions over one phase, kept on the device."""

    def add_batch(self, loss: Tensor, logits: Tensor, y: Tensor) -> None:
        self.add(loss, (logits.argmax(1) == y).sum(), y.shape[0])


def run_phase(
    step: TrainStep,
    batches: Batches,
    phase: str,
    progress: bool = False,
    refresh_every: int = 20,
    desc: str = "",
    combine: Callable[[list[LossAccuracySums]], None] | None = None,
) -> Metrics:
    """One pass over ``batches``: training steps for ``phase="train"``, evaluation otherwise.

    Returns ``<phase>/loss``, ``<phase>/acc`` (output layer), ``<phase>/<layer>/loss|acc`` for every
    monitored layer (the signal included) and ``<phase>/samples_per_s``. ``combine``: called with every sum of
    the phase before they are read (a data-parallel run adds up its processes' sums there).
    """
    training = phase == "train"
    step.train(training)
    step.monitor.reset()
    update = step.train_step if training else step.eval_step
    meter = OutputMeter()
    num_batches = len(batches)
    bar = tqdm(total=num_batches, desc=desc or phase, unit="batch", leave=False, disable=not progress, dynamic_ncols=True)
    start = time.perf_counter()
    for i, (x, y) in enumerate(batches, 1):
        loss, logits = update(x, y)
        meter.add_batch(loss, logits, y)
        if progress and (i % refresh_every == 0 or i == num_batches):
            running = meter.values()  # the only reads of the device during a phase, and only with a bar
            bar.set_postfix(loss=f"{running['loss']:.4f}", acc=f"{running['acc']:.4f}", refresh=False)
        bar.update(1)
    if combine is not None:
        combine([meter, *sums_of(step.monitor)])
    output = meter.values()  # waits for the device, so the time below covers all the phase's work
    elapsed = time.perf_counter() - start
    bar.close()
    metrics: Metrics = {f"{phase}/loss": output["loss"], f"{phase}/acc": output["acc"]}
    for name, values in step.monitor.values().items():  # signal, layer01, ...: each local loss and accuracy
        for key, value in values.items():
            metrics[f"{phase}/{name}/{key}"] = value
    metrics[f"{phase}/samples_per_s"] = meter.count / elapsed if elapsed > 0 else math.nan
    return metrics


def sums_of(monitor: Monitor) -> list[LossAccuracySums]:
    """Every ``LossAccuracySums`` in ``monitor`` (a layer's metrics, or a group of them)."""
    if isinstance(monitor, LossAccuracySums):
        return [monitor]
    if isinstance(monitor, Group):
        return [s for m in monitor.monitors for s in sums_of(m)]
    return []


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
