"""Training throughput of one network in four process layouts on one machine: the speed-up of layer parallelism.

    python experiments/parallel_benchmark.py [--recipes mlp,vgg8q] [--rounds 2] [--data-dir DIR] [--json FILE]

Every measurement is one epoch of ``python train.py <recipe> <layout>`` in a fresh process (or torchrun's
processes), its training samples/s read from the run's metrics.jsonl:

  a. one process, one thread;
  b. one process, two threads;
  c. data parallel: torchrun, 2 processes of one thread, each on half of every batch;
  d. layer parallel: torchrun, 2 pipeline stages of one thread (``parallel.stages=2``).

For (d) the run's log gives each stage's busy time and the speed-up over one process its split allows at most
(the stages' busy time over the busiest's), measured in the pipelined run itself. SigProp trains with
``step.mode=layerwise`` (the step a pipeline runs); backprop (``propagator=backprop``)
in a to c, as it cannot be split into stages. The layouts take turns in every round, so they share the
machine's conditions; read differences smaller than the spread between rounds as noise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from sigprop.tracking.records import machine

ROOT = Path(__file__).resolve().parents[1]  # the checkout: train.py and conf/

RECIPES = {
    # The MNIST MLP preset (3 x 1024) with one signal row per class.
    "mlp": ["experiment=mnist_mlp", "model.num_layers=3", "signal.per_class=true", "dataset.train_subset=12800",
            "dataset.test_subset=1000"],
    # The CIFAR-10 CPU preset: the reference's VGG-8 at quarter width, bf16 with channels-last.
    "vgg8q": ["experiment=repro_cifar10_cpu", "dataset.train_subset=3840", "dataset.test_subset=500",
              "dataset.val_size=null", "scheduler.milestones=[1]"],
}
LAYOUTS = {  # name: (processes, overrides)
    "a": (1, ["threads=1"]),
    "b": (1, ["threads=2"]),
    "c": (2, ["threads=1"]),
    "d": (2, ["threads=1", "parallel.stages=2"]),
}
METHODS = {"sigprop": ["step.mode=layerwise"], "backprop": ["propagator=backprop"]}


def command(processes: int) -> list[str]:
    """train.py, under torchrun when there are several processes."""
    if processes == 1:
        return [sys.executable, str(ROOT / "train.py")]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", str(ROOT / "train.py")]


def measure(args: list[str], processes: int, run_dir: Path) -> dict[str, float]:
    """One epoch's training samples/s and test accuracy (``RuntimeError`` with train.py's last lines if it fails)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    full = [*command(processes), *args, "epochs=1", "logger=none", "progress=false", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(full, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed:\n{(result.stderr or result.stdout)[-2000:]}")
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    figures = {"samples_per_s": row["train/samples_per_s"], "test_acc": row["test/acc"]}
    # A pipeline's log line of the training phase: each stage's busy time, and the speed-up its split allows.
    ceiling = re.search(r"pipeline time: .*; this split allows at most ([\d.]+)x", (run_dir / "train.log").read_text())
    return figures | ({"ceiling": float(ceiling.group(1))} if ceiling else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every layout, taking turns (default 2)")
    parser.add_argument("--data-dir", help="train.py's data_dir (where MNIST and cifar10-jpeg are)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="extra", help="more train.py overrides")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or args.rounds < 1:
        parser.error(f"--recipes: unknown {', '.join(unknown)}" if unknown else f"--rounds {args.rounds}: at least 1")
    extra = [*([f"data_dir={args.data_dir}"] if args.data_dir else []), *args.extra]

    runs = [(recipe, method, layout) for recipe in recipes for method in METHODS for layout in LAYOUTS
            if not (method == "backprop" and layout == "d")]
    figures: dict[tuple[str, str, str], list[dict[str, float]]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for i, (recipe, method, layout) in enumerate(runs):
                processes, overrides = LAYOUTS[layout]
                run_dir = Path(scratch) / f"{round_}-{i}"
                figures[(recipe, method, layout)].append(measure([*RECIPES[recipe], *METHODS[method], *overrides, *extra], processes, run_dir))
                print(f"round {round_ + 1}: {recipe} {method} {layout}: {figures[(recipe, method, layout)][-1]['samples_per_s']:.0f} samples/s", flush=True)

    rows = []
    print("\n| recipe | method | layout | samples/s (each round) | median | vs a | the split allows | test acc |")
    print("|---|---|---|---|---|---|---|---|")
    for recipe, method, layout in runs:
        speeds = [f["samples_per_s"] for f in figures[(recipe, method, layout)]]
        base = statistics.median(f["samples_per_s"] for f in figures[(recipe, method, "a")])
        median = statistics.median(speeds)
        accuracy = figures[(recipe, method, layout)][-1]["test_acc"]
        ceilings = [f["ceiling"] for f in figures[(recipe, method, layout)] if "ceiling" in f]
        ceiling = statistics.median(ceilings) if ceilings else None
        rows.append({"recipe": recipe, "method": method, "layout": layout, "samples_per_s": speeds, "median": median,
                     "vs_a": median / base, "ceiling": ceiling, "test_acc": accuracy})
        allows = f"{ceiling:.2f}x" if ceiling else ""
        print(f"| {recipe} | {method} | {layout} | {' / '.join(f'{s:.0f}' for s in speeds)} | {median:.0f} | "
              f"{median / base:.2f} | {allows} | {accuracy:.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # The overrides given with --set; not data_dir, a path on this machine.
        record = {"machine": machine("cpu"), "torch": version("torch"), "recipes": {r: RECIPES[r] for r in recipes},
                  "layouts": LAYOUTS, "extra": args.extra, "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
