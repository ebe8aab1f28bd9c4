"""SigProp against backpropagation on the same network, data, batch and precision.

Trains every method of ``--methods`` (in each precision of ``--precisions``) from the same
seed and reports samples per second, seconds per epoch, peak memory and test accuracy as
a table and as JSON. Each method runs in a fresh subprocess by default (``--isolate``), so
that its peak memory is its own: peak RSS only grows within a process.

Memory figures (see experiments/PERFORMANCE.md):
  * ``rss_*``: resident set size. ``rss_setup`` after the model, data and optimizer state
    exist; ``rss_peak`` the high-water mark (``VmHWM``, reset after setup) during training;
    ``rss_step = rss_peak - rss_setup`` is what training adds (activations, gradients, workspace).
  * ``cpu_alloc_step``: the peak of torch's CPU allocator during two extra training steps,
    above what was allocated before them (from ``torch.profiler`` memory events).
  * ``cuda_peak`` / ``cuda_step``: ``torch.cuda.max_memory_allocated`` during training, total and
    above the allocation after setup.

Examples::

    python experiments/benchmark.py --preset cpu --json experiments/results/cpu.json
    python experiments/benchmark.py --preset cpu-vgg8 --json experiments/results/cpu-vgg8.json
    python experiments/benchmark.py --preset gpu --json experiments/results/gpu.json
"""
from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sigprop import loss as sp_loss  # noqa: E402
from sigprop.data.loader import Augment, TensorLoader  # noqa: E402
from sigprop.engine.learners import BackpropLearner, Learner, SigpropLearner  # noqa: E402
from sigprop.nets import Projection, mlp, vgg  # noqa: E402
from sigprop.nets.network import Network  # noqa: E402

log = logging.getLogger("benchmark")

SHARED_DATA = Path(os.environ.get("SIGPROP_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATA_DIR = Path(os.environ.get("SIGPROP_DATA_DIR", ROOT / "data"))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
}
FULL_EPOCH = {"cifar10": 50_000, "mnist": 60_000}

# Each method: the learner and its options. ``sync`` adds a host sync (``loss.item()``) in every
# layer at every step, as the reference implementation does; ``loader="pil"`` feeds batches
# through a torchvision DataLoader with per-sample PIL augmentation on one worker (the reference's data path).
METHODS: dict[str, dict[str, Any]] = {
    "bp": {"kind": "bp"},
    "sp-reference": {"kind": "sp", "mode": "layerwise", "fuse_ht": False, "sync": True},
    "sp-reference-pil": {"kind": "sp", "mode": "layerwise", "fuse_ht": False, "sync": True, "loader": "pil"},
    "bp-pil": {"kind": "bp", "loader": "pil"},
    "sp-layerwise-sep": {"kind": "sp", "mode": "layerwise", "fuse_ht": False},
    "sp-layerwise": {"kind": "sp", "mode": "layerwise"},
    "sp-fused-sep": {"kind": "sp", "mode": "fused", "fuse_ht": False},
    "sp-fused": {"kind": "sp", "mode": "fused"},
    "sp-fused-pc": {"kind": "sp", "mode": "fused", "per_class": True},
    "sp-layerwise-pc": {"kind": "sp", "mode": "layerwise", "per_class": True},
    "sp-lowmem": {"kind": "sp", "mode": "lowmem"},
    "sp-lowmem-pc": {"kind": "sp", "mode": "lowmem", "per_class": True},
}


@dataclass
class Config:
    """One benchmark configuration (all methods share it)."""

    dataset: str = "cifar10"
    n_train: int = 10_000
    n_test: int = 2_000
    model: str = "vgg8"
    feat_mult: float = 1.0
    num_hidden: int = 1024
    num_layers: int = 1
    norm: str = "instance"
    nonlin: str = "leakyrelu"
    dropout: float = 0.0
    batch: int = 128
    lr: float = 5e-4
    loss: str = "v15"
    topk: int = 6
    steps: int = 0  # training steps per method (0: whole epochs)
    epochs: int = 1
    warmup: int = 3  # first steps left out of the timing (allocator, cuDNN autotuning, compilation)
    chunk: int = 5  # steps per timed chunk; methods take turns chunk by chunk
    memory: bool = True  # measure peak memory, one fresh subprocess per method
    mem_steps: int = 3  # training steps in the memory measurement
    profile_steps: int = 2  # further steps under torch.profiler for the CPU allocator's peak
    eval_every_epoch: bool = True
    methods: list[str] = field(default_factory=lambda: ["bp", "sp-layerwise", "sp-fused", "sp-fused-pc"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    channels_last: bool = False
    compile: bool = False
    augment: bool = True
    device: str = "cpu"
    seed: int = 0
    threads: int = 0  # torch.set_num_threads (0: torch's default; the CPU presets use 1, see PERFORMANCE.md)
    profile_memory: bool = True  # CPU allocator peak from torch.profiler (CPU only)
    cudnn_benchmark: bool = True  # let cuDNN time its convolution algorithms (fixed shapes; both methods gain)


PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on two cores: a narrow VGG8 on a CIFAR-10 subset.
    "tiny": dict(dataset="cifar10", n_train=256, n_test=128, feat_mult=0.0625, num_hidden=64, batch=32, steps=6,
                 warmup=2, chunk=2, mem_steps=1, profile_steps=1, threads=1, methods=["bp", "sp-fused", "sp-fused-pc"]),
    # A couple of minutes on two cores: VGG8 at a quarter width, batch 128.
    "cpu": dict(n_train=2_560, n_test=1_000, feat_mult=0.25, num_hidden=256, steps=20, warmup=3, threads=1,
                methods=["bp", "sp-reference", "sp-layerwise", "sp-fused-sep", "sp-fused", "sp-fused-pc",
                         "sp-layerwise-pc"]),
    # The reference network at batch 128 on two cores: a few steps, for speed and peak memory.
    "cpu-vgg8": dict(n_train=1_280, n_test=256, steps=4, warmup=1, chunk=1, threads=1, mem_steps=2, profile_steps=1,
                     methods=["bp", "sp-layerwise", "sp-fused", "sp-fused-pc", "sp-layerwise-pc"]),
    # The reference experiment on a GPU: CIFAR-10 (10k-image carried subset), vgg8, instance norm, batch 128.
    "gpu": dict(device="cuda", n_train=10_000, n_test=2_000, epochs=3, warmup=5, channels_last=True,
                methods=["bp", "sp-reference", "sp-layerwise", "sp-fused", "sp-fused-pc", "sp-layerwise-pc"]),
}


# --------------------------------------------------------------------------- data


def cifar10_cache(n_train: int, n_test: int, data_dir: Path = DATA_DIR) -> dict[str, Tensor]:
    """A balanced CIFAR-10 subset as ``uint8`` tensors, cached in ``data_dir/cifar10-cache``.

    Images ``0000..n/10-1`` of every class, read from ``data_dir/cifar10-jpeg`` if the tree is
    there, otherwise from the shared archive; the cache is what travels to a GPU machine.
    """
    cache = data_dir / "cifar10-cache" / f"cifar10-{n_train}-{n_test}.pt"
    if cache.exists():
        return torch.load(cache)
    per_class = {"train": n_train // 10, "test": n_test // 10}
    larger = sorted((data_dir / "cifar10-cache").glob("cifar10-*-*.pt"))
    for other in larger:  # a larger cache holds this subset too (the per-class prefix)
        a, b = (int(v) for v in other.stem.split("-")[1:])
        if a >= n_train and b >= n_test:
            src = torch.load(other)
            out = {}
            for split, n in per_class.items():
                labels = src[f"{split}_labels"]
                keep = torch.cat([torch.nonzero(labels == c)[:n, 0] for c in range(10)])
                out[f"{split}_images"], out[f"{split}_labels"] = src[f"{split}_images"][keep], labels[keep]
            return out
    images: dict[tuple[str, int, int], np.ndarray] = {}
    tree = data_dir / "cifar10-jpeg"
    from PIL import Image

    def wanted(split: str, name: str, file: str) -> bool:
        return split in per_class and name in CIFAR10_CLASSES and file[:-4].isdigit() and int(file[:-4]) < per_class[split]

    if all((tree / s / c / f"{n - 1:04d}.jpg").exists() for s, n in per_class.items() for c in CIFAR10_CLASSES):
        for split, n in per_class.items():
            for ci, name in enumerate(CIFAR10_CLASSES):
                for i in range(n):
                    with Image.open(tree / split / name / f"{i:04d}.jpg") as im:
                        images[(split, ci, i)] = np.asarray(im.convert("RGB"))
    else:
        archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
        if not archive.exists():
            raise FileNotFoundError(f"CIFAR-10 not found: no cache {cache}, no tree {tree}, no archive {archive}")
        left = 10 * sum(per_class.values())
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 4 and wanted(parts[1], parts[2], parts[3]):
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    with Image.open(io.BytesIO(data)) as im:
                        images[(parts[1], CIFAR10_CLASSES.index(parts[2]), int(parts[3][:-4]))] = np.asarray(
                            im.convert("RGB")
                        )
                    left -= 1
                    if left == 0:
                        break
    out = {}
    for split in per_class:
        keys = sorted(k for k in images if k[0] == split)
        out[f"{split}_images"] = torch.from_numpy(np.stack([images[k] for k in keys])).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_labels"] = torch.tensor([k[1] for k in keys])
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def _read_idx(name: str) -> np.ndarray:
    for path in (DATA_DIR / "MNIST" / "raw" / name, SHARED_DATA / "MNIST" / "raw" / f"{name}.gz"):
        if path.exists():
            raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise FileNotFoundError(f"MNIST file {name} not found in {DATA_DIR / 'MNIST/raw'} or {SHARED_DATA / 'MNIST/raw'}")


def load_data(cfg: Config) -> dict[str, Tensor]:
    """``train_images``/``test_images`` (uint8, N x C x H x W) and labels for ``cfg.dataset``."""
    if cfg.dataset == "cifar10":
        return cifar10_cache(cfg.n_train, cfg.n_test)
    if cfg.dataset == "mnist":
        out = {}
        for split, prefix, n in (("train", "train", cfg.n_train), ("test", "t10k", cfg.n_test)):
            out[f"{split}_images"] = torch.from_numpy(_read_idx(f"{prefix}-images-idx3-ubyte")[:n].copy()).unsqueeze(1)
            out[f"{split}_labels"] = torch.from_numpy(_read_idx(f"{prefix}-labels-idx1-ubyte")[:n].astype(np.int64))
        return out
    raise ValueError(f"unknown dataset {cfg.dataset!r}")


class PILDataset(torch.utils.data.Dataset):
    """The reference's data path: one PIL image per sample, torchvision transforms per sample."""

    def __init__(self, images: Tensor, labels: Tensor, mean: tuple[float, ...], std: tuple[float, ...], augment: bool):
        import torchvision.transforms as T

        self.images = images.permute(0, 2, 3, 1).numpy()
        self.labels = labels
        ops = [T.RandomCrop(images.shape[-1], padding=4), T.RandomHorizontalFlip()] if augment else []
        self.transform = T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        img = self.images[i]
        image = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(image), self.labels[i]


def make_loader(cfg: Config, data: dict[str, Tensor], kind: str, device: torch.device, seed: int) -> Any:
    """Training batches: ``tensor`` (data on the device, augmented there per batch) or ``pil``."""
    mean, std = STATS[cfg.dataset]
    augment = Augment(crop_padding=4, flip=cfg.dataset == "cifar10") if cfg.augment else None
    if kind == "tensor":
        gen = torch.Generator().manual_seed(seed)
        return TensorLoader(data["train_images"], data["train_labels"], cfg.batch, mean, std, shuffle=True,
                            augment=augment, device=device, generator=gen, drop_last=True)
    if kind == "pil":
        ds = PILDataset(data["train_images"], data["train_labels"], mean, std, cfg.augment)
        gen = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(ds, cfg.batch, shuffle=True, num_workers=1, drop_last=True,
                                           pin_memory=device.type == "cuda", generator=gen, persistent_workers=True)
    raise ValueError(f"unknown loader {kind!r}")


def batches(loader: Any, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless batches on ``device`` (a new epoch whenever the loader runs out)."""
    while True:
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


# --------------------------------------------------------------------------- learners


class SyncingLoss:
    """Wraps a loss and reads it on the host at every call, like the reference's per-layer ``loss.item()``."""

    def __init__(self, loss: Any) -> None:
        self.loss = loss

    def __call__(self, *args: Any) -> Tensor:
        out = self.loss(*args)
        out.item()
        return out


def build_network(cfg: Config, input_shape: tuple[int, ...]) -> Network:
    """The network of ``cfg``, initialised from the current RNG state."""
    common = dict(norm=cfg.norm, nonlin=cfg.nonlin, dropout=cfg.dropout, num_hidden=cfg.num_hidden)
    if cfg.model == "mlp":
        return mlp(input_shape, 10, num_layers=cfg.num_layers, **common)
    return vgg(cfg.model, input_shape, 10, feat_mult=cfg.feat_mult, num_layers=cfg.num_layers, **common)


def build_loss(cfg: Config) -> Any:
    if cfg.loss == "v15":
        return sp_loss.v15_input_target_topk(cfg.topk)
    if cfg.loss == "v9":
        return sp_loss.v9_input_target_max_all
    if cfg.loss == "v14":
        return sp_loss.v14_input_target_max_rand
    raise ValueError(f"unknown loss {cfg.loss!r}")


def build_learner(cfg: Config, method: str, precision: str, input_shape: tuple[int, ...], device: torch.device) -> Learner:
    """The learner of ``method`` on a network initialised from ``cfg.seed``."""
    spec = METHODS[method]
    torch.manual_seed(cfg.seed)
    network = build_network(cfg, input_shape)
    for part in (network.stem, *network.blocks, network.head):
        part.to(device)
    fused = device.type in ("cuda", "cpu")
    optimizer = functools.partial(torch.optim.Adam, lr=cfg.lr, fused=fused)
    options: dict[str, Any] = {}
    if precision != "fp32":
        options["precision"] = precision
    if cfg.channels_last:
        options["channels_last"] = True
    if cfg.compile:
        options["compile"] = True
    if spec["kind"] == "bp":
        learner: Learner = BackpropLearner(network, optimizer, **options)
    else:
        loss = build_loss(cfg)
        if spec.get("sync"):
            loss = SyncingLoss(loss)
        signal = Projection(per_class=True) if spec.get("per_class") else Projection()
        if spec.get("fuse_ht") is not None:
            options["fuse_ht"] = spec["fuse_ht"]
        learner = SigpropLearner(network, signal, loss, optimizer, mode=spec["mode"], **options)
    learner.model.to(device)
    return learner


def init_optimizer_state(learner: Learner) -> None:
    """Create the optimizers' state now, so that setup memory includes it (Adam: zero moments, step 0 after)."""
    params = [p for o in learner.optimizers for g in o.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    for o in learner.optimizers:
        o.step()  # zero gradients and zero moments: the parameters do not move
        for state in o.state.values():
            if "step" in state and torch.is_tensor(state["step"]):
                state["step"].zero_()
    for p in params:
        p.grad = None


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


@torch.no_grad()
def evaluate(learner: Learner, data: dict[str, Tensor], cfg: Config, device: torch.device) -> float:
    """Test accuracy of the output layer."""
    mean, std = STATS[cfg.dataset]
    loader = TensorLoader(data["test_images"], data["test_labels"], 500, mean, std, device=device)
    learner.eval()
    correct = torch.zeros((), device=device)
    for x, y in loader:
        _, logits = learner.eval_step(x, y)
        correct += (logits.argmax(1) == y).sum()
    learner.train()
    return float(correct) / len(data["test_labels"])


class Runner:
    """One method being trained: its learner, its batches, its step times and accuracies."""

    def __init__(self, cfg: Config, method: str, precision: str, data: dict[str, Tensor], device: torch.device) -> None:
        self.method, self.precision = method, precision
        loader = make_loader(cfg, data, METHODS[method].get("loader", "tensor"), device, cfg.seed)
        self.steps_per_epoch = len(loader)
        self.batches = batches(loader, device)
        self.learner = build_learner(cfg, method, precision, tuple(data["train_images"].shape[1:]), device)
        self.learner.train()
        self.step = 0
        self.chunks: list[tuple[int, float, float]] = []  # (steps, wall seconds, process CPU seconds)
        self.epochs_acc: list[float] = []
        self.loss = float("nan")

    def run(self, steps: int, device: torch.device) -> tuple[float, float]:
        """Train ``steps`` steps; returns their wall and process CPU seconds."""
        sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            x, y = next(self.batches)
            loss, _ = self.learner.train_step(x, y)
        sync(device)
        self.step += steps
        self.loss = float(loss)
        return time.perf_counter() - t0, time.process_time() - c0


def setup_device(cfg: Config) -> torch.device:
    """The device, with this configuration's thread count and cuDNN setting."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    return torch.device(cfg.device)


def run_speed(cfg: Config) -> list[dict[str, Any]]:
    """Train every method in this process, in interleaved chunks of steps, and time them.

    Interleaving (chunk of A, chunk of B, ..., then A again) exposes every method to the same
    machine conditions, which matters on a shared CPU; per-step figures are the median over chunks.
    """
    device = setup_device(cfg)
    data = load_data(cfg)
    runners = [Runner(cfg, m, p, data, device) for p in cfg.precisions for m in cfg.methods]
    spe = runners[0].steps_per_epoch
    total = cfg.steps if cfg.steps > 0 else cfg.epochs * spe
    warm = min(cfg.warmup, max(total - 1, 0))
    for r in runners:  # warm-up steps: allocator, cuDNN autotuning, compilation; not timed
        r.run(warm, device)
    while runners[0].step < total:
        n = min(cfg.chunk, total - runners[0].step, spe - runners[0].step % spe)
        for r in runners:
            wall, cpu = r.run(n, device)
            r.chunks.append((n, wall, cpu))
            if cfg.steps == 0 and r.step % spe == 0 and cfg.eval_every_epoch and r.step < total:
                r.epochs_acc.append(evaluate(r.learner, data, cfg, device))
    results = []
    for r in runners:
        per_step = sorted(w / n for n, w, _ in r.chunks)
        steps = sum(n for n, _, _ in r.chunks)
        wall = sum(w for _, w, _ in r.chunks)
        med = per_step[len(per_step) // 2] if len(per_step) % 2 else sum(per_step[len(per_step) // 2 - 1 : len(per_step) // 2 + 1]) / 2
        acc = evaluate(r.learner, data, cfg, device)
        results.append({
            "method": r.method,
            "precision": r.precision,
            "steps": r.step,
            "timed_steps": steps,
            "time_s": wall,
            "cpu_s_per_step": sum(c for _, _, c in r.chunks) / steps,
            "cpu_s_per_epoch": FULL_EPOCH[cfg.dataset] / cfg.batch * sum(c for _, _, c in r.chunks) / steps,
            "s_per_step_median": med,
            "s_per_step_mean": wall / steps,
            "samples_per_s": cfg.batch / med,
            "s_per_epoch": FULL_EPOCH[cfg.dataset] / cfg.batch * med,
            "test_acc": acc,
            "epochs_acc": r.epochs_acc + [acc],
            "final_loss": r.loss,
        })
    return results


def run_memory(cfg: Config, method: str, precision: str) -> dict[str, Any]:
    """Peak memory of ``cfg.mem_steps`` training steps of one method (run it in a fresh process)."""
    device = setup_device(cfg)
    data = load_data(cfg)
    loader = make_loader(cfg, data, "tensor", device, cfg.seed)
    learner = build_learner(cfg, method, precision, tuple(data["train_images"].shape[1:]), device)
    learner.train()
    init_optimizer_state(learner)
    it = batches(loader, device)
    x, y = next(it)
    del data
    gc_collect()
    sync(device)
    out: dict[str, Any] = {"method": method, "precision": precision, "rss_setup_mib": rss_kib() / 1024}
    reset = reset_rss_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        out["cuda_setup_mib"] = torch.cuda.memory_allocated(device) / 2**20
    for _ in range(cfg.mem_steps):
        learner.train_step(x, y)
    sync(device)
    if reset:
        out["rss_peak_mib"] = rss_kib("VmHWM") / 1024
        out["rss_step_mib"] = out["rss_peak_mib"] - out["rss_setup_mib"]
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["cuda_step_mib"] = out["cuda_peak_mib"] - out["cuda_setup_mib"]
    elif cfg.profile_memory:
        out["cpu_alloc_step_mib"] = cpu_alloc_peak(lambda: learner.train_step(x, y), cfg.profile_steps) / 2**20
    return out


def gc_collect() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- driver


def machine(device: str) -> str:
    """The machine in words: GPU name, or the CPU model and core count."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU, {model}"


def run_isolated(cfg: Config, method: str, precision: str) -> dict[str, Any]:
    """``run_memory`` in a fresh Python process: peak memory only grows within a process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(asdict(cfg)), method, precision, str(out)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0 or not out.exists():
            return {"method": method, "precision": precision, "error": proc.stdout[-3000:]}
        return json.loads(out.read_text())


def table(results: list[dict[str, Any]], device: str) -> str:
    """A Markdown table of the results."""
    cuda = device.startswith("cuda")
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
            f"{num(r.get('s_per_epoch'), '.1f')} | " + ("" if cuda else f"{num(r.get('cpu_s_per_epoch'), '.1f')} | ") +
            f"{num(r.get(mem_cols[0]), '.0f')} | {num(r.get(mem_cols[1]), '.0f')} | "
            f"{num(r.get('test_acc'), '.3f')} | {accs} |"
        )
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None)
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--no-isolate", action="store_true", help="measure memory in this process (figures not comparable)")
    p.add_argument("--tiny", action="store_true", help="shrink any preset to seconds (checks the logic, e.g. of the GPU preset on a CPU)")
    p.add_argument("--prepare", action="store_true", help="only build the data cache of the configuration, then exit")
    for f in Config.__dataclass_fields__.values():
        flag = "--" + f.name.replace("_", "-")
        if f.name in ("methods", "precisions"):
            p.add_argument(flag, type=lambda s: s.split(","), default=None)
        elif f.type in ("bool", bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=None)
        else:
            typ = {"int": int, "float": float, "str": str}.get(str(f.type), str)
            p.add_argument(flag, type=typ, default=None)
    args = p.parse_args(argv)
    cfg = Config()
    if args.preset:
        cfg = replace(cfg, **PRESETS[args.preset])
    if args.tiny:
        tiny = {k: v for k, v in PRESETS["tiny"].items() if k != "methods"}
        cfg = replace(cfg, **tiny, epochs=1)
    overrides = {k: getattr(args, k) for k in Config.__dataclass_fields__ if getattr(args, k) is not None}
    cfg = replace(cfg, **overrides)
    for m in cfg.methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available() and not args.prepare:
        p.error("--device cuda but no CUDA device is available")
    return cfg, args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and optionally writes) the JSON report."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg, args = parse(argv)
    if args.prepare:
        data = load_data(cfg)
        log.info("data ready: %d train, %d test images (%s)", len(data["train_labels"]), len(data["test_labels"]),
                 DATA_DIR / "cifar10-cache" if cfg.dataset == "cifar10" else cfg.dataset)
        return {}
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "machine": machine(cfg.device),
        "torch": torch.__version__,
        "config": asdict(cfg),
        "epoch_samples": FULL_EPOCH[cfg.dataset],
        "memory_isolated": cfg.memory and not args.no_isolate,
        "results": [],
    }

    def save() -> None:  # after every phase, so that a run cut short still leaves its figures
        report["wall_s"] = time.perf_counter() - t0
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))

    log.info("timing %s x %s on %s ...", ",".join(cfg.methods), ",".join(cfg.precisions), cfg.device)
    report["results"] = results = run_speed(cfg)
    save()
    for r in results:
        log.info("  %-18s %-5s %8.1f samples/s %8.1f s/epoch  test acc %.3f", r["method"], r["precision"],
                 r["samples_per_s"], r["s_per_epoch"], r["test_acc"])
    if cfg.memory:
        for r in results:
            log.info("memory of %s (%s) ...", r["method"], r["precision"])
            m = run_memory(cfg, r["method"], r["precision"]) if args.no_isolate else run_isolated(cfg, r["method"], r["precision"])
            if "error" in m:
                log.error("memory run of %s failed:\n%s", r["method"], m["error"])
            r.update({k: v for k, v in m.items() if k not in ("method", "precision")})
            save()
    text = table(results, cfg.device)
    sys.stdout.write(f"\n{report['machine']}, torch {torch.__version__}\n{text}\n")
    save()
    return report


def child(argv: list[str]) -> None:
    cfg_dict, method, precision, out = argv
    cfg = Config(**json.loads(cfg_dict))
    result = run_memory(cfg, method, precision)
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
