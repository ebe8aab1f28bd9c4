"""Run the reproduction tables: every row over its seeds, then the results table, its JSON and the curves.

    python experiments/reproduce.py mnist fashion_mnist                # every row of two tables, seeds 0 1 2
    python experiments/reproduce.py mnist --rows mlp-sigprop-v15 --seeds 0   # one row, one seed
    python experiments/reproduce.py cifar10 --dry-run                  # the commands, time estimate, missing data
    python experiments/reproduce.py --report-only                      # rewrite the report from the runs so far
    python experiments/reproduce.py mnist --record                     # ... into the tracked REPRODUCTION.md

A row is one ``python train.py ...`` command (a preset of ``conf/experiment/`` and the method's
overrides); each seed runs it with ``seed=<k>`` in ``<out>/<table>/<row>/seed<k>`` (default
``outputs/reproduce``), ``--jobs`` at a time, one torch thread each. A run whose folder holds a
finished ``summary.json`` is skipped, so an interrupted table resumes where it stopped (an
unfinished run with a checkpoint continues from it: ``resume=``). Then, from every run folder found,
it writes a report into ``<out>`` (``REPRODUCTION.md``, ``reproduction.json``, ``plots/``), or with
``--record`` into the tracked files:

* ``experiments/REPRODUCTION.md``: per table, one line per row: test accuracy (mean ± std over the
  seeds) at the last epoch and at the best-validation epoch, that epoch, the epochs, the wall time
  per epoch and the machine, and the row's command; rows without a finished run say "not run";
* ``experiments/results/reproduction.json``: the rows as a list of objects (``table``, ``row``,
  ``dataset``, ``network``, ``method``, ``loss``, ``variant`` (``noaug``, ...: how the row differs from its
  preset, else null), ``command``, ``seeds``: ``{"0": test accuracy at
  the last epoch, ...}``, and the figures of the Markdown table);
* ``experiments/results/reproduction/<table>-<network>-layers.png`` and ``-test_acc.png``: the
  per-layer test accuracy per epoch, the mean over the seeds with a band from the lowest to the
  highest (``experiments/compare.py --average``).

Rows of tables not run this time keep their figures from the run folders, or from the previous
JSON when their folders are gone, and their curves stay. Anything after ``--set`` is added to every
run (``--set data_dir=DIR device=cuda``; not ``seed=``: the seeds are ``--seeds``); settings that change
results are added to the recorded commands too. ``--dry-run`` prints the commands, a time estimate from
the recorded seconds per epoch, and a warning for every dataset missing from its data folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import OmegaConf

from sigprop.engine.config import changes_results, resolve_device
from sigprop.tracking import plots
from sigprop.tracking.records import RecordError, load_run as load_records, machine, read_summary

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SEEDS = (0, 1, 2)
LOSSES = ("v9", "v14", "v15")
WALL = "wall.json"  # this script's own record of a run: its wall time and machine
REPORT, RESULTS = HERE / "REPRODUCTION.md", HERE / "results" / "reproduction.json"
PLOTS = HERE / "results" / "reproduction"


@dataclass(frozen=True)
class Row:
    """One line of a table: a network trained by one method on one dataset, as one ``train.py`` command."""

    table: str
    dataset: str
    network: str
    method: str  # sigprop, backprop or fixed
    loss: str | None  # the local loss of sigprop rows
    overrides: tuple[str, ...]
    note: str = ""

    @property
    def name(self) -> str:
        """``<network>-<method>[-<loss>]``, plus ``-<note>`` for a row that differs otherwise (``vgg8-sigprop-v15-10min``)."""
        return "-".join(p for p in (self.network, self.method, self.loss, self.note) if p)

    def command(self, extra: Sequence[str] = ()) -> str:
        """The row's ``python train.py ...`` line, with ``extra`` settings that change results; ``seed=`` is the only
        setting left free (the command as shown runs seed 0)."""
        return shlex.join(["python", "train.py", *self.overrides, *(o for o in extra if changes_results(o))])


def method_rows(table: str, dataset: str, network: str, preset: str, settings: Sequence[str] = ()) -> list[Row]:
    """SigProp with each loss (v9, v14, v15), backprop and fixed hidden layers, on one preset (plus ``settings``)."""
    base = (f"experiment={preset}", *settings)
    rows = [Row(table, dataset, network, "sigprop", loss, (*base, "propagator=loss", f"loss={loss}")) for loss in LOSSES]
    rows.append(Row(table, dataset, network, "backprop", None, (*base, "propagator=backprop")))
    # Nothing learns but the output layer: a fixed random signal, every hidden layer (the stem too) at its initialisation.
    rows.append(Row(table, dataset, network, "fixed", None, (*base, "propagator=fixed", "signal=projection_fixed")))
    return rows


# For one GPU run of 10 minutes: the reference recipe shortened to 50 epochs (its schedule scaled to them)
# in bf16 with channels-last and torch.compile. The recipe's dropout makes the per-class signal a different
# rule, so the signal stays per sample and h and t share one call (step.fuse_ht: one draw of the dropout
# masks for both). 50 epochs: about 7.4 s per epoch measured on an H200 in bf16 with channels-last (see
# PERFORMANCE.md), so about 6 minutes of training plus compilation and the test passes.
CIFAR10_FAST = (
    "experiment=cifar10_reference", "dataset=cifar10_jpeg", "epochs=50", "scheduler.milestones=[25,37,44,47]",
    "step.precision=bf16", "step.channels_last=true", "step.compile=true", "step.fuse_ht=true",
)
FMNIST_NO_AUGMENT = ("experiment=repro_fmnist_mlp", "dataset.crop_padding=0", "dataset.flip=false")
# The MLP with augmentation, trained longer at half the learning rate: at 1e-3 its third hidden layer's label-match
# accuracy can collapse before the first step, and 20 epochs leave SigProp's training accuracy at 87 %.
FMNIST_LONG = ("experiment=repro_fmnist_mlp", "optimizer.lr=5e-4", "epochs=60", "scheduler.milestones=[36,48]")
# The reference's CIFAR-10 recipe reads torchvision's CIFAR-10; the JPEG copy is the one that can be prepared offline.
TABLES: dict[str, list[Row]] = {
    "mnist": method_rows("mnist", "mnist", "mlp", "repro_mnist_mlp") + method_rows("mnist", "mnist", "cnn", "repro_mnist_cnn"),
    "fashion_mnist": method_rows("fashion_mnist", "fashion_mnist", "mlp", "repro_fmnist_mlp")
    # The MLP without augmentation: crops and flips keep both methods' training accuracy below 90 % in 20 epochs.
    + [Row("fashion_mnist", "fashion_mnist", "mlp", "sigprop", "v15", (*FMNIST_NO_AUGMENT, "propagator=loss", "loss=v15"), note="noaug"),
       Row("fashion_mnist", "fashion_mnist", "mlp", "backprop", None, (*FMNIST_NO_AUGMENT, "propagator=backprop"), note="noaug"),
       Row("fashion_mnist", "fashion_mnist", "mlp", "sigprop", "v15", (*FMNIST_LONG, "propagator=loss", "loss=v15"), note="long"),
       Row("fashion_mnist", "fashion_mnist", "mlp", "backprop", None, (*FMNIST_LONG, "propagator=backprop"), note="long")]
    + method_rows("fashion_mnist", "fashion_mnist", "cnn", "repro_fmnist_cnn"),
    "cifar10": [
        # On a CPU core: VGG-8 at a quarter of its width, 40 epochs (conf/experiment/repro_cifar10_cpu.yaml).
        Row("cifar10", "cifar10", "vgg8", "sigprop", "v15", ("experiment=repro_cifar10_cpu", "propagator=loss", "loss=v15"), note="cpu"),
        Row("cifar10", "cifar10", "vgg8", "backprop", None, ("experiment=repro_cifar10_cpu", "propagator=backprop"), note="cpu"),
        Row("cifar10", "cifar10", "vgg8", "fixed", None,
            ("experiment=repro_cifar10_cpu", "propagator=fixed", "signal=projection_fixed"), note="cpu"),
        Row("cifar10", "cifar10", "vgg8", "sigprop", "v15", CIFAR10_FAST, note="10min"),
        *method_rows("cifar10", "cifar10", "vgg8", "cifar10_reference", ["dataset=cifar10_jpeg"]),
    ],
    "cifar100": method_rows("cifar100", "cifar100", "vgg8", "repro_cifar100"),
    "svhn": method_rows("svhn", "svhn", "vgg8", "repro_svhn"),
    "stl10": method_rows("stl10", "stl10", "vgg8", "repro_stl10"),
}

# Published figures for orientation (other recipes, mostly longer and larger networks): not this code's results.
ANCHORS = {
    "mnist": "Nøkland & Eidnes 2019 (predsim): MLP 3x1024 0.62 % test error with local losses, 0.75 % with backprop; "
             "VGG-8b 0.26 % (backprop) / 0.31 % (local).",
    "fashion_mnist": "Nøkland & Eidnes 2019: VGG-8b 4.53 % (backprop) / 4.65 % (local) test error.",
    "cifar10": "SigProp paper: 91.6 % with VGG-8 (the reference's ex4 recipe, 400 epochs). Nøkland & Eidnes 2019: "
               "VGG-8b 5.99 % (backprop) / 5.58 % (local) test error.",
    "cifar100": "Nøkland & Eidnes 2019: VGG-8b 26.24 % (backprop) / 24.07 % (local) test error.",
    "svhn": "",
    "stl10": "",
}


# ----------------------------------------------------------------------------- running


@dataclass
class Run:
    """One seed of one row: its folder and, once finished, what it measured."""

    row: Row
    seed: int
    folder: Path
    summary: dict[str, Any] = field(default_factory=dict)
    wall: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return bool(self.summary) and self.summary.get("status", "finished") == "finished"


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def summary_of(folder: Path) -> dict[str, Any]:
    """The run's ``summary.json`` (``{}`` when it has none, or a damaged one: the run is trained again)."""
    try:
        return read_summary(folder)
    except RecordError:
        return {}


def load_run(row: Row, seed: int, out: Path) -> Run:
    folder = out / row.table / row.name / f"seed{seed}"
    return Run(row, seed, folder, summary_of(folder), read_json(folder / WALL))


def machine_of(extra: Sequence[str]) -> str:
    """The machine the runs use (``device=`` of ``extra``, else ``auto``): the GPU's name, or the CPU model and cores."""
    device = next((o.split("=", 1)[1] for o in extra if o.startswith("device=")), "auto")
    return machine(resolve_device(device))


def train_args(run: Run, extra: Sequence[str], logger: str) -> list[str]:
    """The ``train.py`` arguments of one run: the row, the seed, one thread, its folder, the W&B sweep, ``extra``."""
    args = [*run.row.overrides, f"seed={run.seed}", "threads=1", "progress=false", f"hydra.run.dir={run.folder}"]
    if logger == "none":
        args.append("logger=none")
    else:  # one W&B sweep per table; the run's group (its settings without the seed) averages the seeds
        args.append(f"logger.sweep=reproduce-{run.row.table}")
    return args + list(extra)


def set_aside(folder: Path) -> Path:
    """Rename an unfinished run's folder to ``<folder>.partial<N>`` (the run never writes into a used folder)."""
    n = 1
    while folder.with_name(f"{folder.name}.partial{n}").exists():
        n += 1
    target = folder.with_name(f"{folder.name}.partial{n}")
    folder.rename(target)
    return target


def resumable(folder: Path) -> bool:
    """Whether an unfinished run's folder holds a checkpoint of fewer epochs than it was to train."""
    config = folder / ".hydra" / "config.yaml"
    if not (folder / "checkpoint.pt").is_file() or not config.is_file():
        return False
    return 0 < epochs_in(folder) < int(OmegaConf.load(config).epochs)


def epochs_in(folder: Path) -> int:
    """How many epochs a run folder's ``metrics.jsonl`` holds."""
    path = folder / "metrics.jsonl"
    return len([line for line in path.read_text().splitlines() if line.strip()]) if path.is_file() else 0


def execute(run: Run, extra: Sequence[str], logger: str, where: str) -> Run:
    """Train one run in a subprocess (continuing an unfinished one from its checkpoint) and record its wall time."""
    args = train_args(run, extra, logger)
    resumed_from = 0
    if run.folder.exists():
        partial = set_aside(run.folder)
        if resumable(partial):
            args.append(f"resume={partial}")
            resumed_from = epochs_in(partial)
    run.folder.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    console = run.folder.parent / f"{run.folder.name}.console.log"
    start = time.perf_counter()
    with open(console, "w") as out:
        code = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    run.summary = summary_of(run.folder)
    if code != 0 or not run.finished:
        print(f"FAILED {run.row.name} seed {run.seed} (exit status {code}): see {console}", flush=True)
        return run
    run.wall = {"wall_s": wall, "epochs_run": int(run.summary["epochs"]) - resumed_from, "machine": where,
                "threads": 1, "extra": list(extra)}
    (run.folder / WALL).write_text(json.dumps(run.wall, indent=1) + "\n")
    acc = run.summary.get("final/test/acc")
    print(f"done {run.row.table}/{run.row.name} seed {run.seed}: test acc {acc:.4f}, {wall:.0f} s", flush=True)
    return run


def run_all(runs: list[Run], jobs: int, extra: Sequence[str], logger: str) -> None:
    """Train every unfinished run, ``jobs`` at a time."""
    todo = [r for r in runs if not r.finished]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs finished already; {len(todo)} to train, {jobs} at a time", flush=True)
    where = machine_of(extra)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda r: execute(r, extra, logger, where), todo))


# ----------------------------------------------------------------------------- the report


def stats(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``None`` where undefined)."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def row_record(row: Row, runs: list[Run]) -> dict[str, Any]:
    """The JSON object of one row: its identity, command and every finished seed's figures."""
    done = [r for r in runs if r.finished]
    record: dict[str, Any] = {
        "table": row.table, "row": row.name, "dataset": row.dataset, "network": row.network,
        # With the settings its runs were made with (--set); a row not run yet as it would run by default.
        "method": row.method, "loss": row.loss, "variant": row.note or None, "command": row.command(next((r.wall["extra"] for r in done if "extra" in r.wall), ())),
        "seeds": {str(r.seed): r.summary.get("final/test/acc") for r in done},
    }
    if not done:
        return record
    with_val = [r for r in done if "best/val/acc" in r.summary]
    timed = [r for r in done if r.wall.get("epochs_run")]
    record |= {
        "test_acc_at_best_val": {str(r.seed): r.summary.get("best/test/acc") for r in with_val},
        "best_val_epoch": {str(r.seed): r.summary.get("best/epoch") for r in with_val},
        "epochs": int(done[0].summary["epochs"]),
        "s_per_epoch": statistics.fmean(r.wall["wall_s"] / r.wall["epochs_run"] for r in timed) if timed else None,
        "wall_s": sum(r.wall["wall_s"] for r in timed) if timed else None,
        "machine": timed[0].wall.get("machine") if timed else None,
    }
    return record


def duration(seconds: float) -> str:
    """``1 h 05 min``, ``12 min``."""
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def percent(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if std is not None else "")


def markdown_row(record: dict[str, Any]) -> str:
    command = f"`{record['command']}`"
    variant = record.get("variant")  # how the row differs from its preset (noaug, 10min)
    head = [record["network"], record["method"] + (f" ({variant})" if variant else ""), record["loss"] or "-"]
    if not record["seeds"]:
        return "| " + " | ".join(head + ["not run"] + ["-"] * 6 + [command]) + " |"
    final = stats([v for v in record["seeds"].values() if v is not None])
    at_best = stats([v for v in record.get("test_acc_at_best_val", {}).values() if v is not None])
    epochs = sorted({int(e) for e in record.get("best_val_epoch", {}).values() if e is not None})
    s_epoch = record.get("s_per_epoch")
    cells = [
        percent(*final), percent(*at_best), ", ".join(map(str, epochs)) or "-", str(record.get("epochs", "-")),
        f"{s_epoch:.0f}" if s_epoch else "-", record.get("machine") or "-", ", ".join(sorted(record["seeds"])),
    ]
    return "| " + " | ".join(head + cells + [command]) + " |"


COLUMNS = ("network", "method", "loss", "test acc % (last epoch)", "test acc % at best val epoch", "best val epoch",
           "epochs", "s/epoch", "machine", "seeds", "command")


def markdown(records: list[dict[str, Any]], plots: dict[str, list[Path]], report_dir: Path) -> str:
    lines = [
        "# Reproduction results",
        "",
        "Written by `python experiments/reproduce.py TABLE` from its runs; every figure was measured by the",
        "command in its row, which runs seed 0 as shown and the other seeds with `seed=1`, `seed=2`.",
        "Test accuracy is the mean ± standard deviation over the seeds, at the last epoch and at the",
        "epoch of the highest validation accuracy (presets with `dataset.val_size`; the reference CIFAR-10",
        "recipe trains on all 50,000 images and has none). *s/epoch* is the wall time of a run divided by its",
        "epochs (start-up included, one torch thread, other runs sharing the machine's cores: an upper bound).",
        "A method with a suffix, e.g. *sigprop (noaug)*, differs from its preset as its command says.",
        "*fixed*: only the output layer learns, on a fixed random signal and hidden layers left at their",
        "initialisation; it shows what the hidden layers' learning adds.",
    ]
    for table in dict.fromkeys(r["table"] for r in records):
        rows = [r for r in records if r["table"] == table]
        lines += ["", f"## {table}", ""]
        if ANCHORS.get(table):
            lines += [f"For orientation, published figures of other recipes: {ANCHORS[table]}", ""]
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += [markdown_row(r) for r in rows]
        walls = [r["wall_s"] for r in rows if r.get("wall_s")]
        if walls:
            lines += ["", f"Wall time of the runs above, summed over runs: {duration(sum(walls))}."]
        for png in plots.get(table, []):
            lines += ["", f"![{png.stem}]({os.path.relpath(png, report_dir)})"]
    return "\n".join(lines) + "\n"


def plot_table(table: str, runs: list[Run], plot_dir: Path, gone: Iterable[str] = ()) -> list[Path]:
    """Per network of the table: every layer's test accuracy per epoch and the output's, mean over seeds with a band.
    ``gone``: rows measured before whose run folders are not here; a network with one keeps the curves drawn before
    (drawn again, they would lose that row's lines)."""
    written: list[Path] = []
    gone = set(gone)
    for network in dict.fromkeys(r.row.network for r in runs):
        folders = [r.folder for r in runs if r.row.network == network and r.finished]
        drawn = sorted(plot_dir.glob(f"{table}-{network}-*.png"))
        missing = [row.name for row in TABLES[table] if row.network == network and row.name in gone]
        if not folders or (missing and drawn):  # e.g. a fresh clone: the curves drawn before stay, and their links
            if folders:
                print(f"not redrawn: {table}-{network} curves: no run folders here for {', '.join(missing)} "
                      f"(recorded before); the curves drawn before stay", file=sys.stderr)
            written += drawn
            continue
        found = []
        for folder in folders:
            try:
                found.append(load_records(folder))
            except RecordError as err:
                print(f"not plotted: {err}", file=sys.stderr)
        found = [run for run in found if run.rows]
        if not found:
            continue
        lines = plots.lines_of(found, average=True)
        for line in lines:  # label each line by its row (method and loss) rather than its overrides
            row = next(r.row for r in runs if r.folder == line.runs[0].folder)
            line.label = " ".join(p for p in (row.method, row.loss, row.note) if p)
        plot_dir.mkdir(parents=True, exist_ok=True)
        for kind, figure in (("layers", plots.plot_layers), ("test_acc", plots.plot_test_accuracy)):
            written.append(plots.save(figure(lines), plot_dir / f"{table}-{network}-{kind}.png"))
    return written


def report(out: Path, report_path: Path, results_path: Path, plot_dir: Path, plotted: Iterable[str]) -> list[dict[str, Any]]:
    """Write the Markdown, the JSON and (for the tables in ``plotted``) the curves from every run folder under ``out``."""
    previous = {(r["table"], r["row"]): r for r in (json.loads(results_path.read_text()) if results_path.is_file() else [])}
    records, plots = [], {}
    for table, rows in TABLES.items():
        table_runs, gone = [], []
        for row in rows:
            seeds = sorted({*SEEDS, *(int(p.name[4:]) for p in (out / table / row.name).glob("seed*") if p.name[4:].isdigit())})
            runs = [load_run(row, s, out) for s in seeds]
            table_runs += runs
            record = row_record(row, runs)
            kept = previous.get((table, row.name))
            if not record["seeds"] and kept and kept.get("seeds") and not any(r.folder.exists() for r in runs):
                record = kept  # measured before, its folders gone: keep what was recorded
                gone.append(row.name)
            records.append(record)
        if table in plotted:
            plots[table] = plot_table(table, table_runs, plot_dir, gone)
        else:  # the curves drawn before, in the order plot_table writes them (by network, as the rows list them)
            networks = dict.fromkeys(row.network for row in rows)
            plots[table] = [png for network in networks for png in sorted(plot_dir.glob(f"{table}-{network}-*.png"))]
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(records, indent=1) + "\n")
    report_path.write_text(markdown(records, plots, report_path.parent))
    return records


# ----------------------------------------------------------------------------- the dry run


def setting(extra: Sequence[str], key: str) -> str | None:
    """The value ``extra`` gives ``key`` (the last one), or ``None``."""
    values = [o.split("=", 1)[1] for o in extra if o.split("=", 1)[0].lstrip("+") == key and "=" in o]
    return values[-1] if values else None


def estimate(todo: list[Run], jobs: int, extra: Sequence[str]) -> str:
    """The training time of the runs to do, from the seconds per epoch recorded for their rows (the tracked
    results/reproduction.json), as one line."""
    recorded = {(r["table"], r["row"]): r for r in (json.loads(RESULTS.read_text()) if RESULTS.is_file() else [])}
    total, machines, unknown = 0.0, set(), []
    epochs_set = setting(extra, "epochs")
    for run in todo:
        record = recorded.get((run.row.table, run.row.name), {})
        if not record.get("s_per_epoch") or not record.get("epochs"):
            unknown.append(run)
            continue
        epochs = int(epochs_set) if epochs_set and epochs_set.isdigit() else int(record["epochs"])
        total += record["s_per_epoch"] * epochs
        machines.add(record.get("machine") or "?")
    if not todo:
        return "estimate: nothing to run (every run has finished)"
    timed = len(todo) - len(unknown)
    text = f"estimate: {len(todo)} runs to train"
    if timed:
        text += (f"{f', {timed} of them' if unknown else ','} about {duration(total)} of training in all, about "
                 f"{duration(total / min(jobs, timed))} with {jobs} at a time (the s/epoch recorded in "
                 f"{os.path.relpath(RESULTS, ROOT)}, measured on {'; '.join(sorted(machines))}; another machine differs)")
    if unknown:
        rows = ", ".join(dict.fromkeys(f"{r.row.table}/{r.row.name}" for r in unknown))
        text += f"; no recorded time for {len(unknown)} runs ({rows})"
    return text


def missing_data(rows: list[Row], extra: Sequence[str]) -> list[str]:
    """One line for every dataset the rows read that is not in its data folder: without a network the runs
    fail at their start, so say how to put it there first."""
    from hydra import compose, initialize_config_dir

    from sigprop.data.datasets import ImageFolder, TorchvisionDataset
    from sigprop.engine import parts
    from sigprop.engine.rundir import choices_of

    warnings: dict[tuple[str, str], str] = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for row in rows:
            cfg = compose(config_name="config", overrides=[*row.overrides, *extra], return_hydra_config=True)
            dataset = parts.build_group(cfg, "dataset", choices_of(cfg))
            key = (type(dataset).__name__, str(getattr(dataset, "root", "")))
            if key in warnings:
                continue
            warnings[key] = ""
            if isinstance(dataset, ImageFolder) and not dataset.path.is_dir():
                warnings[key] = (f"dataset {dataset.name}: not found in {dataset.path} (the runs of {row.table} fail "
                                 f"without it); put it there with: {dataset.prepare_command()}")
            elif isinstance(dataset, TorchvisionDataset):
                try:
                    dataset.open("train", download=False)
                except Exception:  # torchvision: "Dataset not found or corrupted" (RuntimeError), or a damaged file
                    reason = "not downloaded yet: a run downloads it, and fails offline"
                    warnings[key] = str(dataset.missing(reason))
    return [w for w in warnings.values() if w]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tables", nargs="*", metavar="TABLE", help=f"tables to run: {', '.join(TABLES)}")
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="only these rows (e.g. mlp-sigprop-v15 cnn-backprop)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seeds of every row (default 0 1 2)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "reproduce", help="where the run folders go")
    parser.add_argument("--logger", choices=("wandb", "none"), default="wandb", help="W&B runs besides metrics.jsonl")
    parser.add_argument("--dry-run", action="store_true", help="print every run's command, whether it is done, the "
                        "time it should take and the data it needs; run nothing")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the runs so far")
    parser.add_argument("--record", action="store_true", help="write the tracked experiments/REPRODUCTION.md, "
                        "results/reproduction.json and results/reproduction/ (default: REPRODUCTION.md, "
                        "reproduction.json and plots/ in --out)")
    parser.add_argument("--report", type=Path, help="the Markdown table (default <out>/REPRODUCTION.md)")
    parser.add_argument("--results", type=Path, help="the JSON rows (default <out>/reproduction.json)")
    parser.add_argument("--plots", type=Path, help="the curves' folder (default <out>/plots)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="extra",
                        help="train.py settings added to every run (those that change results to the commands too)")
    args = parser.parse_args(argv)
    seeded = [o for o in args.extra if o.split("=", 1)[0].lstrip("+~") == "seed"]
    if seeded:
        parser.error(f"--set {seeded[0]}: the seeds come from --seeds (e.g. --seeds 5), one run each")
    unknown = [t for t in args.tables if t not in TABLES]
    if unknown:
        parser.error(f"unknown table {', '.join(unknown)}: choose from {', '.join(TABLES)}")
    if not args.tables and not args.report_only:
        parser.error("name a table to run, or --report-only")
    rows = [row for t in args.tables for row in TABLES[t]]
    if args.rows:
        missing = set(args.rows) - {row.name for row in rows}
        if missing:
            parser.error(f"no row {', '.join(sorted(missing))} in {', '.join(args.tables)}: "
                         f"rows are {', '.join(dict.fromkeys(row.name for row in rows))}")
        rows = [row for row in rows if row.name in args.rows]
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    out = args.out.absolute()
    report_path = args.report or (REPORT if args.record else out / "REPRODUCTION.md")
    results_path = args.results or (RESULTS if args.record else out / "reproduction.json")
    plot_dir = args.plots or (PLOTS if args.record else out / "plots")
    runs = [load_run(row, seed, out) for row in rows for seed in args.seeds]
    if args.dry_run:
        for run in runs:
            state = "done" if run.finished else "to run"
            print(f"[{state}] python train.py {shlex.join(train_args(run, args.extra, args.logger))}")
        print(estimate([r for r in runs if not r.finished], args.jobs, args.extra))
        for warning in missing_data([r.row for r in runs if not r.finished], args.extra):
            print(f"warning: {warning}")
        return 0
    if not args.report_only:
        run_all(runs, args.jobs, args.extra, args.logger)
    records = report(out, report_path, results_path, plot_dir, plotted=args.tables or TABLES)
    print(f"wrote {report_path}, {results_path} ({sum(bool(r['seeds']) for r in records)} of {len(records)} rows measured)"
          + ("" if args.record or args.report else "; --record writes the tracked experiments/REPRODUCTION.md instead"))
    failed = [r for r in runs if not r.finished]
    return 1 if failed and not args.report_only else 0


if __name__ == "__main__":
    sys.exit(main())
