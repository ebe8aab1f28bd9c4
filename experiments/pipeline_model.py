"""Layer parallelism against data parallelism on N devices, predicted from each layer's measured time, the
messages between stages and the gradients data parallelism averages.

    python experiments/pipeline_model.py [--recipes mlp,vgg8q] [--data-dir DIR] [--check FILE] [--json FILE]
        [--set KEY=VALUE ...]

1. Each layer's time per batch, in this process with one thread (``pipeline.layer_times``: its forward pass and
   its update, as ``step.mode=layerwise`` runs them), the bytes of ``(h, t, labels)`` after it, and its gradients.
2. The links between two gloo processes on this machine, fitted as ``latency + bytes / bandwidth``: a message
   from one process to the other, and an all-reduce.
3. For two processes on this machine, the model's samples/s for (c) data parallelism and (d) two pipeline stages
   beside what ``parallel_benchmark.py`` measured (``--check`` its JSON).
4. For N = 2, 4, 8 GPUs, the speed-up over one GPU of N stages and of N replicas, from the same layer times scaled
   to an assumed time per batch on one GPU and the NCCL bandwidths of ``GPU_LINKS`` (assumptions, not measured).

The model: a pipeline of N stages takes, per batch, its busiest stage's time (compute, plus on the CPU the
stage's own sending and receiving; NCCL's copies overlap the compute, so on GPUs a link only limits when a message
takes longer than the busiest stage), and fills and drains once per epoch. Data parallelism takes one device's
time over N (each replica computes 1/N of the batch: optimistic for small per-device batches on a GPU) plus one
all-reduce per gradient tensor (the app's data parallelism averages each tensor before its optimizer steps).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmark import build_step, compose_config, load_data
from parallel_benchmark import RECIPES
from sigprop.data import TensorLoader
from sigprop.engine.pipeline import balanced_bounds, layer_times, signal_state, units
from sigprop.tracking.records import machine

SIZES = [2**k for k in range(10, 25, 2)]  # bytes of the messages timed between two processes: 1 KiB to 16 MiB
# NCCL between GPUs of one node (assumptions, not measured here): a point-to-point message's and an all-reduce's
# latency (s) and bandwidth (bytes/s; the all-reduce's is NCCL's "bus bandwidth").
GPU_LINKS = {
    "NVLink (H100 SXM)": {"p2p": (10e-6, 150e9), "all_reduce": (20e-6, 350e9)},
    "PCIe 4 (no NVLink)": {"p2p": (15e-6, 20e9), "all_reduce": (30e-6, 15e9)},
}
GPU_STEP_MS = (5.0, 50.0)  # one GPU's time per batch assumed for the predictions (the CPU's layer shares kept)
TIMED_STEPS = 10  # per layer_times call, after one untimed
EPOCH_BATCHES = 390  # batches per epoch in the GPU predictions (CIFAR-10's 50,000 images in batches of 128)


@dataclass
class Layers:
    """What the model needs of one recipe: seconds per batch of the signal and of each layer (``layer_times``),
    alone and with a second process timing the same at once (``together``: two processes share the machine's
    memory and caches), the same for half a batch (one of two data-parallel replicas), the bytes a stage sends
    after each layer, the sizes of every layer's gradient tensors (bytes), the batch size."""

    signal: float
    costs: list[float]
    together_signal: float
    together_costs: list[float]
    together_half_batch: float  # seconds of the signal and every layer on half a batch, two processes at once
    message_bytes: list[int]
    gradient_bytes: list[list[int]]
    batch_size: int
    batches: int  # per epoch in parallel_benchmark.py's run of the recipe


def build(overrides: Sequence[str]) -> tuple[Any, torch.Tensor, torch.Tensor, Any]:
    """The recipe's training step built as train.py builds it (one thread, CPU), its first training batch, its config."""
    overrides = [*overrides, "threads=1", "device=cpu"]
    cfg = compose_config(overrides)
    data, device = load_data(overrides)  # sets the thread count
    step = build_step(overrides, "sp-layerwise", cfg.step.precision, data, device)
    loader = TensorLoader(data.train_images, data.train_labels, cfg.batch_size, data.mean, data.std, device=device)
    x, y = next(iter(loader))
    return step, x, y, cfg


def _time_together(rank: int, overrides: Sequence[str], half: bool, start: Any, result: Any) -> None:
    step, x, y, _ = build(overrides)
    if half:
        x, y = x[: len(y) // 2], y[: len(y) // 2]
    start.wait()  # both processes time at once
    result[rank] = layer_times(step, x, y, steps=TIMED_STEPS)


def time_together(overrides: Sequence[str], half: bool) -> tuple[float, list[float]]:
    """``layer_times`` in two processes at once (their mean), on a whole batch or its half."""
    with mp.Manager() as manager:
        result, start = manager.dict(), manager.Barrier(2)
        mp.spawn(_time_together, args=(list(overrides), half, start, result), nprocs=2)
        (signal_a, costs_a), (signal_b, costs_b) = result[0], result[1]
    return (signal_a + signal_b) / 2, [(a + b) / 2 for a, b in zip(costs_a, costs_b)]


def measure_layers(overrides: Sequence[str]) -> Layers:
    """The recipe's layers timed on its first training batch (one thread per process), its messages and gradients."""
    step, x, y, cfg = build(overrides)
    signal, costs = layer_times(step, x, y, steps=TIMED_STEPS)
    together_signal, together_costs = time_together(overrides, half=False)
    half_signal, half_costs = time_together(overrides, half=True)
    with torch.no_grad():  # the messages' sizes: (h, t, labels) after every layer
        step.eval()
        state = signal_state(step, x, y)
        sizes = []
        with step._autocast(x):
            for layer in units(step.model):
                state = layer(state)
                sizes.append(sum(v.numel() * v.element_size() for v in state if isinstance(v, torch.Tensor)))
    layers = units(step.model)
    grads = [[p.numel() * 4 for p in layer.parameters() if p.requires_grad] for layer in layers]
    grads[0] += [p.numel() * 4 for p in step.model.signal.parameters() if p.requires_grad]  # type: ignore[union-attr]
    batches = -(-int(cfg.dataset.train_subset) // cfg.batch_size)
    return Layers(signal, costs, together_signal, together_costs, half_signal + sum(half_costs), sizes, grads,
                  cfg.batch_size, batches)


def _time_links(rank: int, port: int, result: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    p2p, reduce = {}, {}
    for size in SIZES:
        buffer = torch.zeros(size // 4)
        for what, table in (("p2p", p2p), ("all_reduce", reduce)):
            times = []
            for _ in range(12):
                dist.barrier()
                start = time.perf_counter()
                if what == "all_reduce":
                    dist.all_reduce(buffer)
                elif rank == 0:  # a round trip, halved: one message's time from send to its receipt
                    dist.send(buffer, 1)
                    dist.recv(buffer, 1)
                else:
                    dist.recv(buffer, 0)
                    dist.send(buffer, 0)
                times.append((time.perf_counter() - start) / (2 if what == "p2p" else 1))
            table[size] = statistics.median(times[2:])
    if rank == 0:
        result.update(p2p=p2p, all_reduce=reduce)
    dist.destroy_process_group()


def fit(times: dict[int, float]) -> tuple[float, float]:
    """Latency (s) and bandwidth (bytes/s) of ``time = latency + bytes / bandwidth``, least squares."""
    sizes, values = list(times), list(times.values())
    mean_s, mean_t = statistics.fmean(sizes), statistics.fmean(values)
    slope = sum((s - mean_s) * (t - mean_t) for s, t in zip(sizes, values)) / sum((s - mean_s) ** 2 for s in sizes)
    return max(mean_t - slope * mean_s, 0.0), 1 / slope


def measure_links() -> dict[str, tuple[float, float]]:
    """Two gloo processes of one thread on this machine: the fitted point-to-point message and all-reduce."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        result = manager.dict()
        mp.spawn(_time_links, args=(port, result), nprocs=2)
        return {what: fit(dict(result[what])) for what in ("p2p", "all_reduce")}


def send_time(link: tuple[float, float], size: float) -> float:
    return link[0] + size / link[1]


def layout_speed(layers: Layers, stages: int, replicas: int, links: dict[str, tuple[float, float]], batches: int,
                 overlapped: bool, scale: float = 1.0, shared: bool = False) -> tuple[float, list[int]]:
    """Samples/s of ``stages`` pipeline stages (split as ``parallel.split=auto`` splits them) of ``replicas``
    data-parallel replicas each, and the split. Layer times are multiplied by ``scale``; a replica computes
    1/replicas of the batch, then
    all-reduces each of its stage's gradient tensors among the replicas (a ring: 2 (r - 1) / r of its bytes cross
    each link). ``overlapped``: sending and receiving take none of a stage's time (NCCL's copies), but a message
    that takes longer than the busiest stage limits the pipeline; otherwise they add to the stage's time (gloo
    on CPUs). The pipeline fills and drains once per epoch of ``batches``. ``shared``: the processes share this
    machine (two of them): the layers take the times measured two processes at once, and each of two replicas the
    measured time of half a batch."""
    costs = [c * scale for c in (layers.together_costs if shared else layers.costs)]
    signal = (layers.together_signal if shared else layers.signal) * scale
    bounds = balanced_bounds(signal, costs, stages)
    latency, bandwidth = links["all_reduce"]
    per_stage = []
    for s, (a, b) in enumerate(zip(bounds, bounds[1:])):
        compute = (sum(costs[a:b]) + (signal if s == 0 else 0.0)) / replicas
        if shared and replicas == 2 and stages == 1:
            compute = layers.together_half_batch * scale
        reduce = 0.0 if replicas == 1 else sum(
            latency + 2 * (replicas - 1) / replicas * size / bandwidth for sizes in layers.gradient_bytes[a:b] for size in sizes
        )
        sent = send_time(links["p2p"], layers.message_bytes[b - 1] / replicas) if b < len(costs) else 0.0
        received = send_time(links["p2p"], layers.message_bytes[a - 1] / replicas) if a > 0 else 0.0
        work = compute + reduce
        per_stage.append(max(work, sent, received) if overlapped else work + sent + received)
    epoch = (batches - 1) * max(per_stage) + sum(per_stage)
    return batches * layers.batch_size / epoch, bounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--data-dir", help="train.py's data_dir (where MNIST and cifar10-jpeg are)")
    parser.add_argument("--check", type=Path, help="parallel_benchmark.py's JSON: its (a), (c), (d) beside the model's")
    parser.add_argument("--json", type=Path, help="write the measurements and predictions here")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", dest="extra", help="more train.py overrides")
    args = parser.parse_args()
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"--recipes: unknown {', '.join(unknown)}")
    if args.check is not None and not args.check.is_file():
        parser.error(f"--check {args.check}: no such file")
    measured = {}
    if args.check is not None:
        for row in json.loads(args.check.read_text())["rows"]:
            if row["method"] == "sigprop":
                measured[(row["recipe"], row["layout"])] = row["median"]

    links = measure_links()
    print(f"gloo on this machine: message {links['p2p'][0] * 1e6:.0f} us + {links['p2p'][1] / 1e9:.2f} GB/s; "
          f"all-reduce of 2 {links['all_reduce'][0] * 1e6:.0f} us + {links['all_reduce'][1] / 1e9:.2f} GB/s")
    record: dict[str, Any] = {"machine": machine("cpu"), "torch": torch.__version__, "extra": args.extra, "cpu_links": links,
                              "gpu_links": GPU_LINKS, "gpu_step_ms": GPU_STEP_MS, "recipes": {}}
    for recipe in recipes:
        layers = measure_layers([*RECIPES[recipe], *([f"data_dir={args.data_dir}"] if args.data_dir else []), *args.extra])
        one = layers.batch_size / (layers.signal + sum(layers.costs))
        d, bounds = layout_speed(layers, 2, 1, links, layers.batches, overlapped=False, shared=True)
        c, _ = layout_speed(layers, 1, 2, links, layers.batches, overlapped=False, shared=True)
        total = layers.signal + sum(layers.costs)
        together = layers.together_signal + sum(layers.together_costs)
        print(f"\n{recipe}: one thread {total * 1e3:.1f} ms per batch of {layers.batch_size} alone, {together * 1e3:.1f} ms "
              f"two processes at once ({layers.together_half_batch * 1e3:.1f} ms per half batch) "
              f"(signal {layers.signal * 1e3:.1f}; layers {', '.join(f'{c * 1e3:.1f}' for c in layers.costs)}); "
              f"messages {', '.join(f'{m / 2**20:.2f}' for m in layers.message_bytes)} MiB; "
              f"gradients {sum(map(sum, layers.gradient_bytes)) / 2**20:.1f} MiB in {sum(map(len, layers.gradient_bytes))} tensors")
        print("| two processes on this CPU | model samples/s | vs a | measured (parallel_benchmark) | vs a |")
        print("|---|---|---|---|---|")
        rows = {}
        for layout, speed in (("a", one), ("c", c), ("d", d)):
            seen = measured.get((recipe, layout))
            base = measured.get((recipe, "a"))
            rows[layout] = {"model": speed, "measured": seen}
            shown = f"{seen:.0f} | {seen / base:.2f}" if seen and base else "— | —"
            print(f"| {layout} | {speed:.0f} | {speed / one:.2f} | {shown} |")
        gpu: dict[str, Any] = {}
        print("\n| one GPU's time per batch, links | N | N stages | N replicas | best stages × replicas |")
        print("|---|---|---|---|---|")
        for step_ms in GPU_STEP_MS:
            scale = step_ms / 1e3 / total
            single = layers.batch_size / (total * scale)
            for name, gpu_links in GPU_LINKS.items():
                figures = {}
                for n in (2, 4, 8):
                    mixes = {}
                    for stages in (k for k in range(1, n + 1) if n % k == 0 and k <= len(layers.costs)):
                        speed, split = layout_speed(layers, stages, n // stages, gpu_links, EPOCH_BATCHES, True, scale)
                        mixes[f"{stages}x{n // stages}"] = {"speed_up": speed / single, "split": split[1:-1]}
                    best = max(mixes, key=lambda k: mixes[k]["speed_up"])
                    figures[n] = mixes
                    stages_only = f"{mixes[f'{n}x1']['speed_up']:.2f}x" if f"{n}x1" in mixes else "—"
                    print(f"| {step_ms:g} ms, {name} | {n} | {stages_only} | {mixes[f'1x{n}']['speed_up']:.2f}x | "
                          f"{best}: {mixes[best]['speed_up']:.2f}x |")
                gpu[f"{step_ms:g} ms, {name}"] = figures
        record["recipes"][recipe] = {"layers": asdict(layers), "split": bounds[1:-1], "cpu": rows, "gpu": gpu}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
