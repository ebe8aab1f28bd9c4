"""Training throughput of one network in four process layouts on one machine: the speed-up of layer parallelism.

    python experiments/parallel_benchmark.py [--recipes mlp,vgg8q] [--layouts a,b,c,d] [--rounds 2] [--data-dir DIR]
        [--json FILE] [--set KEY=VALUE ...]

Every measurement is one epoch of ``python train.py <recipe> <layout>`` in a fresh process (or torchrun's
processes), its training samples/s read from the run's metrics.jsonl:

  a. one process, one thread;
  b. one process, two threads;
  c. data parallel: torchrun, 2 processes of one thread, each on half of every batch;
  d. layer parallel: torchrun, 2 pipeline stages of one thread (``parallel.stages=2``).

For (d) the run's log gives the split (``parallel.split=auto``: by each layer's measured time), each stage's busy
time and its time waiting for its neighbours, and the speed-up over one process its split allows at most (the
stages' busy time over the busiest's), measured in the pipelined run itself. SigProp trains with
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
from typing import Any

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


def measure(args: list[str], processes: int, run_dir: Path) -> dict[str, Any]:
    """One epoch's training samples/s and test accuracy, and for a pipeline its split and each stage's busy and
    waiting seconds (``RuntimeError`` with train.py's last lines if it fails)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    full = [*command(processes), *args, "epochs=1", "logger=none", "progress=false", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(full, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed:\n{(result.stderr or result.stdout)[-2000:]}")
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    figures: dict[str, Any] = {"samples_per_s": row["train/samples_per_s"], "test_acc": row["test/acc"]}
    log = (run_dir / "train.log").read_text()
    # A pipeline's log lines: the measured split, then for the training phase each stage's busy and waiting time
    # and the speed-up the split allows.
    split = re.search(r"pipeline split by measured time .*; (parallel.split=\[[\d,]*\])", log)
    times = re.search(r"pipeline time: (.*); this split allows at most ([\d.]+)x", log)
    if split:
        figures["split"] = split.group(1)
    if times:
        stages = re.findall(r"busy ([\d.]+) s, waiting ([\d.]+) s", times.group(1))
        figures |= {"ceiling": float(times.group(2)), "busy_s": [float(b) for b, _ in stages],
                    "waiting_s": [float(w) for _, w in stages]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated, of a, b, c, d (a is the base)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every layout, taking turns (default 2)")
    parser.add_argument("--data-dir", help="train.py's data_dir (where MNIST and cifar10-jpeg are)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="extra", help="more train.py overrides")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    layouts = args.layouts.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"--recipes: unknown {', '.join(unknown)}")
    if "a" not in layouts or any(layout not in LAYOUTS for layout in layouts):
        parser.error(f"--layouts {args.layouts}: of {', '.join(LAYOUTS)}, with a (the base of every ratio)")
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: at least 1")
    extra = [*([f"data_dir={args.data_dir}"] if args.data_dir else []), *args.extra]

    runs = [(recipe, method, layout) for recipe in recipes for method in METHODS for layout in layouts
            if not (method == "backprop" and layout == "d")]
    figures: dict[tuple[str, str, str], list[dict[str, Any]]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for i, (recipe, method, layout) in enumerate(runs):
                processes, overrides = LAYOUTS[layout]
                run_dir = Path(scratch) / f"{round_}-{i}"
                figures[(recipe, method, layout)].append(measure([*RECIPES[recipe], *METHODS[method], *overrides, *extra], processes, run_dir))
                print(f"round {round_ + 1}: {recipe} {method} {layout}: {figures[(recipe, method, layout)][-1]['samples_per_s']:.0f} samples/s", flush=True)

    rows = []
    print("\n| recipe | method | layout | samples/s (each round) | median | vs a | the split allows | waiting | test acc |")
    print("|---|---|---|---|---|---|---|---|---|")
    for recipe, method, layout in runs:
        speeds = [f["samples_per_s"] for f in figures[(recipe, method, layout)]]
        base = statistics.median(f["samples_per_s"] for f in figures[(recipe, method, "a")])
        median = statistics.median(speeds)
        accuracy = figures[(recipe, method, layout)][-1]["test_acc"]
        rounds = [f for f in figures[(recipe, method, layout)] if "ceiling" in f]
        ceiling = statistics.median(f["ceiling"] for f in rounds) if rounds else None
        # Each stage's time waiting for its neighbours (fill, drain, messages) as a share of its phase, median of rounds.
        waiting = [statistics.median(f["waiting_s"][s] / (f["busy_s"][s] + f["waiting_s"][s]) for f in rounds)
                   for s in range(len(rounds[0]["busy_s"]))] if rounds else None
        rows.append({"recipe": recipe, "method": method, "layout": layout, "samples_per_s": speeds, "median": median,
                     "vs_a": median / base, "ceiling": ceiling, "waiting_share": waiting, "test_acc": accuracy,
                     "pipeline": [{k: f[k] for k in ("split", "busy_s", "waiting_s") if k in f} for f in rounds]})
        allows = f"{ceiling:.2f}x" if ceiling else ""
        waits = ", ".join(f"{w:.0%}" for w in waiting) if waiting else ""
        print(f"| {recipe} | {method} | {layout} | {' / '.join(f'{s:.0f}' for s in speeds)} | {median:.0f} | "
              f"{median / base:.2f} | {allows} | {waits} | {accuracy:.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        # The overrides given with --set; not data_dir, a path on this machine.
        record = {"machine": machine("cpu"), "torch": version("torch"), "recipes": {r: RECIPES[r] for r in recipes},
                  "layouts": LAYOUTS, "extra": args.extra, "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
