"""SigProp against backpropagation on the same network, data, batch and precision, built by the training app.

    python experiments/benchmark.py [--methods bp,sp-fused-pc,...] [--steps N] [--json FILE] [train.py overrides ...]

Every method is the app's configuration (conf/, composed as ``python train.py <overrides>`` would)
with the method's own overrides on top (``METHODS``: ``propagator=backprop``, ``step.mode=lowmem``,
``signal.per_class=true``, ...), so the benchmark trains exactly what the app trains, on the data
``sigprop.data`` loads. All methods start from the same seed (same initial weights) and see the
same batches. The methods take turns in chunks of steps, so they share the machine's conditions;
each one's peak memory is measured in a fresh process (peak RSS only grows within a process).

Memory figures (see experiments/PERFORMANCE.md):
  * ``rss_step``: the resident set's high-water mark (``VmHWM``, reset after setup) during the
    training steps, above the resident set after setup (model, data, optimizer state).
  * ``cpu_alloc_step``: the peak of torch's CPU allocator during two more training steps, above
    what was allocated before them (from ``torch.profiler`` memory events).
  * ``cuda_peak`` / ``cuda_step``: ``torch.cuda.max_memory_allocated`` during training, total and
    above the allocation after setup.

Example (the reference experiment at quarter width on 2,560 CIFAR-10 images, one CPU thread)::

    python experiments/benchmark.py --methods bp,sp-fused-pc,sp-lowmem-pc --steps 20 --epoch-samples 50000 \\
        experiment=cifar10_reference dataset=cifar10_jpeg dataset.train_subset=2560 dataset.test_subset=1000 \\
        model.dropout=0 model.feat_mult=0.25 model.num_hidden=256 +optimizer.fused=true device=cpu threads=1
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Sequence

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import Tensor

from sigprop.data import ImageData, TensorLoader
from sigprop.engine import TrainStep, parts
from sigprop.engine.config import check_settings, resolve_device
from sigprop.engine.rundir import choices_of
from sigprop.tracking.records import machine

ROOT = Path(__file__).resolve().parents[1]  # the checkout: conf/ and train.py

log = logging.getLogger("benchmark")


@dataclass(frozen=True)
class Method:
    """A way to train: the app's overrides that select it, and how the benchmark feeds and watches it.

    ``sync``: read every local loss on the host as it is computed (``loss.item()`` in every layer at
    every step), as the reference implementation does. ``pil``: batches from a torchvision
    ``DataLoader`` with per-sample PIL augmentation on one worker (the reference's data path).
    """

    overrides: tuple[str, ...]
    sync: bool = False
    pil: bool = False


SEPARATE = ("+propagator.fuse_ht=false",)  # h and t through each layer in two calls, not one
METHODS: dict[str, Method] = {
    "bp": Method(("propagator=backprop",)),
    "bp-pil": Method(("propagator=backprop",), pil=True),
    "sp-reference": Method(("step.mode=layerwise", *SEPARATE), sync=True),
    "sp-reference-pil": Method(("step.mode=layerwise", *SEPARATE), sync=True, pil=True),
    "sp-layerwise-sep": Method(("step.mode=layerwise", *SEPARATE)),
    "sp-layerwise": Method(("step.mode=layerwise",)),
    "sp-fused-sep": Method(("step.mode=fused", *SEPARATE)),
    "sp-fused": Method(("step.mode=fused",)),
    "sp-fused-pc": Method(("step.mode=fused", "signal.per_class=true")),
    "sp-layerwise-pc": Method(("step.mode=layerwise", "signal.per_class=true")),
    "sp-lowmem": Method(("step.mode=lowmem",)),
    "sp-lowmem-pc": Method(("step.mode=lowmem", "signal.per_class=true")),
}


@dataclass
class Timing:
    """How the benchmark runs the methods (everything else is the app's config)."""

    methods: tuple[str, ...] = ("bp", "sp-layerwise", "sp-fused", "sp-fused-pc")
    precisions: tuple[str, ...] = ("fp32",)
    steps: int = 0  # training steps per method (0: whole epochs)
    epochs: int = 1
    warmup: int = 3  # first steps left out of the timing (allocator, cuDNN autotuning, compilation)
    chunk: int = 5  # steps per timed chunk; methods take turns chunk by chunk
    memory: bool = True  # measure peak memory, one fresh subprocess per method
    mem_steps: int = 3  # training steps in the memory measurement
    profile_steps: int = 2  # further steps under torch.profiler for the CPU allocator's peak (CPU only)
    eval_every_epoch: bool = True
    epoch_samples: int = 0  # samples per epoch for s/epoch (0: the training images loaded)
    cudnn_benchmark: bool = True  # let cuDNN time its convolution algorithms (fixed shapes; every method gains)


# --------------------------------------------------------------------------- the app's objects


def compose_config(overrides: Sequence[str]) -> DictConfig:
    """conf/config.yaml composed with ``overrides``, as ``python train.py <overrides>`` would."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def method_config(overrides: Sequence[str], method: str, precision: str) -> DictConfig:
    return compose_config([*overrides, *METHODS[method].overrides, f"step.precision={precision}"])


class SyncingLoss:
    """Wraps a loss and reads it on the host at every call, like the reference's per-layer ``loss.item()``."""

    def __init__(self, loss: Any) -> None:
        self.loss = loss

    def __call__(self, *args: Any) -> Tensor:
        out = self.loss(*args)
        out.item()
        return out


def load_data(overrides: Sequence[str]) -> tuple[ImageData, torch.device]:
    """The configured dataset (``sigprop.data``) and device, with the configured threads and cuDNN setting."""
    cfg = compose_config(overrides)
    check_settings(cfg)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    return parts.load_data(parts.build_group(cfg, "dataset", choices_of(cfg))), resolve_device(cfg.device)


def train_app() -> ModuleType:
    """train.py as a module: the benchmark builds every method with its ``build_step``, as the app does."""
    if "train" not in sys.modules:
        spec = importlib.util.spec_from_file_location("train", ROOT / "train.py")
        assert spec is not None and spec.loader is not None
        sys.modules["train"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["train"])
    return sys.modules["train"]


def build_step(overrides: Sequence[str], method: str, precision: str, data: ImageData, device: torch.device) -> TrainStep:
    """The app's training step for ``method``, initialised from the config's seed, on ``device``."""
    cfg = method_config(overrides, method, precision)
    torch.manual_seed(cfg.seed)
    step = train_app().build_step(cfg, data, choices_of(cfg))
    if METHODS[method].sync:
        for monitor in step.monitor.monitors:  # every layer's local loss read on the host, as the reference does
            monitor.loss = SyncingLoss(monitor.loss)
    step.model.to(device)
    return step


class PILDataset(torch.utils.data.Dataset):
    """The reference's data path: one PIL image per sample, torchvision transforms per sample."""

    def __init__(self, data: ImageData) -> None:
        import torchvision.transforms as T

        self.images = data.train_images.permute(0, 2, 3, 1).numpy()
        self.labels = data.train_labels
        a = data.augment
        ops = []
        if a is not None and a.crop_padding:
            ops.append(T.RandomCrop(self.images.shape[1], padding=a.crop_padding))
        if a is not None and a.flip:
            ops.append(T.RandomHorizontalFlip())
        self.transform = T.Compose(ops + [T.ToTensor(), T.Normalize(data.mean, data.std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        img = self.images[i]
        return self.transform(Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)), self.labels[i]


def make_loader(data: ImageData, batch: int, method: str, device: torch.device, seed: int) -> Any:
    """Training batches: the app's ``TensorLoader`` (data on the device, augmented per batch), or the PIL path."""
    generator = torch.Generator().manual_seed(seed)
    if METHODS[method].pil:
        return torch.utils.data.DataLoader(
            PILDataset(data), batch, shuffle=True, num_workers=1, drop_last=True,
            pin_memory=device.type == "cuda", generator=generator, persistent_workers=True,
        )
    return TensorLoader(
        data.train_images, data.train_labels, batch, data.mean, data.std, shuffle=True,
        augment=data.augment, device=device, generator=generator, drop_last=True,
    )


def batches(loader: Any, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless batches on ``device`` (a new epoch whenever the loader runs out)."""
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


# --------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_kib(field_name: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_alloc_peak(step_fn: Any, steps: int) -> int:
    """Peak bytes torch's CPU allocator holds during ``steps`` calls of ``step_fn``, above the start."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            step_fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    total, peak = 0, 0
    mem = sorted((e for e in events if e.get("name") == "[memory]" and e["args"].get("Device Type", 0) == 0),
                 key=lambda e: e["ts"])
    for e in mem:
        total += int(e["args"]["Bytes"])
        peak = max(peak, total)
    return peak


def init_optimizer_state(step: TrainStep) -> None:
    """Create the optimizers' state now, so that setup memory includes it (Adam: zero moments, step 0 after)."""
    params = [p for o in step.optimizers for g in o.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    for o in step.optimizers:
        o.step()  # zero gradients and zero moments: the parameters do not move
        for state in o.state.values():
            if "step" in state and torch.is_tensor(state["step"]):
                state["step"].zero_()
    for p in params:
        p.grad = None


@torch.no_grad()
def evaluate(step: TrainStep, data: ImageData, device: torch.device) -> float:
    """Test accuracy of the output layer."""
    loader = TensorLoader(data.test_images, data.test_labels, 500, data.mean, data.std, device=device)
    step.eval()
    correct = torch.zeros((), device=device)
    for x, y in loader:
        _, logits = step.eval_step(x, y)
        correct += (logits.argmax(1) == y).sum()
    step.train()
    return float(correct) / len(data.test_labels)


class Runner:
    """One method being trained: its training step, its batches, its step times and accuracies."""

    def __init__(self, overrides: Sequence[str], method: str, precision: str, data: ImageData, device: torch.device) -> None:
        self.method, self.precision = method, precision
        self.step = build_step(overrides, method, precision, data, device)
        cfg = compose_config(overrides)
        self.batch = int(cfg.batch_size)
        loader = make_loader(data, self.batch, method, device, seed=cfg.seed)
        self.steps_per_epoch = len(loader)
        self.batches = batches(loader, device)
        self.step.train()
        self.done = 0
        self.chunks: list[tuple[int, float, float]] = []  # (steps, wall seconds, process CPU seconds)
        self.epochs_acc: list[float] = []
        self.loss = float("nan")

    def run(self, steps: int, device: torch.device) -> tuple[float, float]:
        """Train ``steps`` steps; returns their wall and process CPU seconds."""
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = torch.zeros(())
        for _ in range(steps):
            x, y = next(self.batches)
            loss, _ = self.step.train_step(x, y)
        sync(device)
        self.done += steps
        self.loss = float(loss)
        return time.perf_counter() - t0, time.process_time() - c0


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def run_speed(overrides: Sequence[str], timing: Timing) -> list[dict[str, Any]]:
    """Train every method in this process, in interleaved chunks of steps, and time them.

    Interleaving (chunk of A, chunk of B, ..., then A again) exposes every method to the same
    machine conditions, which matters on a shared CPU; per-step figures are the median over chunks.
    """
    torch.backends.cudnn.benchmark = timing.cudnn_benchmark
    data, device = load_data(overrides)
    runners = [Runner(overrides, m, p, data, device) for p in timing.precisions for m in timing.methods]
    spe = runners[0].steps_per_epoch
    epoch_samples = timing.epoch_samples or len(data.train_labels)
    total = timing.steps if timing.steps > 0 else timing.epochs * spe
    warm = min(timing.warmup, max(total - 1, 0))
    for r in runners:  # warm-up steps: allocator, cuDNN autotuning, compilation; not timed
        r.run(warm, device)
    while runners[0].done < total:
        n = min(timing.chunk, total - runners[0].done, spe - runners[0].done % spe)
        for r in runners:
            wall, cpu = r.run(n, device)
            r.chunks.append((n, wall, cpu))
            if timing.steps == 0 and r.done % spe == 0 and timing.eval_every_epoch and r.done < total:
                r.epochs_acc.append(evaluate(r.step, data, device))
    results = []
    for r in runners:
        steps = sum(n for n, _, _ in r.chunks)
        wall = sum(w for _, w, _ in r.chunks)
        cpu_per_step = sum(c for _, _, c in r.chunks) / steps
        med = median([w / n for n, w, _ in r.chunks])
        acc = evaluate(r.step, data, device)
        results.append({
            "method": r.method,
            "precision": r.precision,
            "steps": r.done,
            "timed_steps": steps,
            "time_s": wall,
            "cpu_s_per_step": cpu_per_step,
            "cpu_s_per_epoch": epoch_samples / r.batch * cpu_per_step,
            "s_per_step_median": med,
            "s_per_step_mean": wall / steps,
            "samples_per_s": r.batch / med,
            "s_per_epoch": epoch_samples / r.batch * med,
            "test_acc": acc,
            "epochs_acc": r.epochs_acc + [acc],
            "final_loss": r.loss,
        })
    return results


def run_memory(overrides: Sequence[str], timing: Timing, method: str, precision: str) -> dict[str, Any]:
    """Peak memory of ``timing.mem_steps`` training steps of one method (run it in a fresh process)."""
    torch.backends.cudnn.benchmark = timing.cudnn_benchmark
    data, device = load_data(overrides)
    step = build_step(overrides, method, precision, data, device)
    step.train()
    init_optimizer_state(step)
    cfg = compose_config(overrides)
    x, y = next(batches(make_loader(data, cfg.batch_size, "bp", device, seed=cfg.seed), device))
    del data
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    sync(device)
    out: dict[str, Any] = {"method": method, "precision": precision, "rss_setup_mib": rss_kib() / 1024}
    reset = reset_rss_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        out["cuda_setup_mib"] = torch.cuda.memory_allocated(device) / 2**20
    for _ in range(timing.mem_steps):
        step.train_step(x, y)
    sync(device)
    if reset:
        out["rss_peak_mib"] = rss_kib("VmHWM") / 1024
        out["rss_step_mib"] = out["rss_peak_mib"] - out["rss_setup_mib"]
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["cuda_step_mib"] = out["cuda_peak_mib"] - out["cuda_setup_mib"]
    else:
        out["cpu_alloc_step_mib"] = cpu_alloc_peak(lambda: step.train_step(x, y), timing.profile_steps) / 2**20
    return out


def run_isolated(overrides: Sequence[str], timing: Timing, method: str, precision: str) -> dict[str, Any]:
    """``run_memory`` in a fresh Python process: peak memory only grows within a process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        job = json.dumps({"overrides": list(overrides), "timing": asdict(timing), "method": method, "precision": precision})
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", job, str(out)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not out.exists():
            return {"method": method, "precision": precision, "error": proc.stdout[-3000:]}
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- report


def table(results: list[dict[str, Any]], cuda: bool) -> str:
    """A Markdown table of the results."""
    mem_cols = ("cuda_peak_mib", "cuda_step_mib") if cuda else ("rss_step_mib", "cpu_alloc_step_mib")
    head = "| method | precision | samples/s | s/epoch | " + ("" if cuda else "CPU s/epoch | ") + (
        "peak MiB (CUDA total) | step MiB (CUDA) |" if cuda else "step MiB (RSS) | step MiB (allocator) |"
    ) + " test acc | acc per epoch |"
    lines = [head, "|" + "---|" * (8 if cuda else 9)]

    def num(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) and not math.isnan(v) else "-"

    for r in results:
        accs = ", ".join(f"{a:.3f}" for a in r.get("epochs_acc", []))
        lines.append(
            f"| {r['method']} | {r['precision']} | {num(r.get('samples_per_s'), '.1f')} | "
            f"{num(r.get('s_per_epoch'), '.1f')} | " + ("" if cuda else f"{num(r.get('cpu_s_per_epoch'), '.1f')} | ")
            + f"{num(r.get(mem_cols[0]), '.0f')} | {num(r.get(mem_cols[1]), '.0f')} | "
            f"{num(r.get('test_acc'), '.3f')} | {accs} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> tuple[list[str], Timing, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="train.py overrides: the network, data, device, precision, ...")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--no-isolate", action="store_true", help="measure memory in this process (figures not comparable)")
    for f in Timing.__dataclass_fields__.values():
        flag = "--" + f.name.replace("_", "-")
        if f.name in ("methods", "precisions"):
            p.add_argument(flag, type=lambda s: tuple(s.split(",")), default=None, help=f"comma-separated (default {f.default})")
        elif f.type in ("bool", bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=None)
        else:
            p.add_argument(flag, type=int, default=None)
    args = p.parse_intermixed_args(argv)  # options and overrides in any order
    timing = replace(Timing(), **{k: getattr(args, k) for k in Timing.__dataclass_fields__ if getattr(args, k) is not None})
    unknown = [m for m in timing.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    return list(args.overrides), timing, args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and optionally writes) the JSON report."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides, timing, args = parse(argv)
    device = resolve_device(compose_config(overrides).device)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine(device),
        "torch": torch.__version__,
        "overrides": overrides,
        "timing": asdict(timing),
        "memory_isolated": timing.memory and not args.no_isolate,
        "results": [],
    }

    def save() -> None:  # after every phase, so that a run cut short still leaves its figures
        report["wall_s"] = time.perf_counter() - t0
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))

    log.info("timing %s x %s on %s ...", ",".join(timing.methods), ",".join(timing.precisions), device)
    report["results"] = results = run_speed(overrides, timing)
    save()
    for r in results:
        log.info("  %-18s %-5s %8.1f samples/s %8.1f s/epoch  test acc %.3f", r["method"], r["precision"],
                 r["samples_per_s"], r["s_per_epoch"], r["test_acc"])
    if timing.memory:
        for r in results:
            log.info("memory of %s (%s) ...", r["method"], r["precision"])
            measure = run_memory if args.no_isolate else run_isolated
            m = measure(overrides, timing, r["method"], r["precision"])
            if "error" in m:
                log.error("memory run of %s failed:\n%s", r["method"], m["error"])
            r.update({k: v for k, v in m.items() if k not in ("method", "precision")})
            save()
    sys.stdout.write(f"\n{report['machine']}, torch {torch.__version__}\n{table(results, device.type == 'cuda')}\n")
    save()
    return report


def child(job_json: str, out: str) -> None:
    """The memory measurement of one method, in this fresh process."""
    job = json.loads(job_json)
    timing = Timing(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["timing"].items()})
    result = run_memory(job["overrides"], timing, job["method"], job["precision"])
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
    else:
        main()
