"""Correctness checks of the fast paths on the benchmark's device (run by ``gpu_check.sh``).

1. Equivalence on the device, in float64 (where the rule's equivalence shows without fp32's
   rounding noise, see tests/perf/test_equivalence.py): per-class vs per-sample signal,
   fused vs layer-wise, low-memory vs layer-wise, after 20 steps on real CIFAR-10 images.
2. No host synchronisation inside a training step (``torch.cuda.set_sync_debug_mode("error")``),
   for backprop and the fast SigProp paths, fp32 and bf16.
3. Optionally ``torch.compile`` (``--compile``): a few steps run and the loss is finite.

Prints one line per check and writes ``--json``; exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import benchmark as B  # noqa: E402
from sigprop import loss as L  # noqa: E402
from sigprop.engine import BackpropLearner, SigpropLearner  # noqa: E402
from sigprop.nets import Projection, vgg  # noqa: E402


def small_learner(mode: str, per_class: bool, dtype: torch.dtype, device: torch.device) -> SigpropLearner:
    torch.manual_seed(0)
    net = vgg("vgg8", (3, 32, 32), 10, feat_mult=0.0625, num_hidden=32, norm="instance", nonlin="leakyrelu")
    learner = SigpropLearner(net, Projection(per_class=per_class), L.v15_input_target_topk(6),
                             functools.partial(torch.optim.Adam, lr=5e-4), mode=mode, recompute_chunk=12)
    learner.model.to(device=device, dtype=dtype)
    learner.model.signal.module[0].register_forward_hook(lambda m, i, o: (o[0], o[1].to(dtype)))
    return learner


def train_small(learner: SigpropLearner, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        idx = torch.randint(0, len(y), (32,), generator=g).to(x.device)
        learner.train_step(x[idx].to(dtype), y[idx])
    return {k: v.detach().double().cpu() for k, v in learner.model.state_dict().items()}


def max_relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in a if b[k].numel())


def equivalence(device: torch.device, data: dict[str, torch.Tensor]) -> dict[str, float]:
    mean, std = B.STATS["cifar10"]
    x = ((data["train_images"][:2000].float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    x, y = x.to(device), data["train_labels"][:2000].to(device)
    f64 = torch.float64
    ref = train_small(small_learner("layerwise", False, f64, device), x, y, f64)
    out = {
        "per_class_vs_per_sample": max_relative(train_small(small_learner("layerwise", True, f64, device), x, y, f64), ref),
        "fused_vs_layerwise": max_relative(train_small(small_learner("fused", False, f64, device), x, y, f64), ref),
        "lowmem_vs_layerwise": max_relative(train_small(small_learner("lowmem", False, f64, device), x, y, f64), ref),
    }
    return out


def no_sync(device: torch.device, data: dict[str, torch.Tensor], cfg: B.Config) -> dict[str, str]:
    """Train steps under ``set_sync_debug_mode("error")``: any host synchronisation raises."""
    out = {}
    loader = B.make_loader(cfg, data, "tensor", device, 0)
    x, y = next(iter(loader))
    for method, precision in (("bp", "fp32"), ("sp-fused", "fp32"), ("sp-fused-pc", "fp32"), ("sp-fused-pc", "bf16"),
                              ("sp-layerwise-pc", "fp32"), ("sp-lowmem-pc", "fp32")):
        learner = B.build_learner(cfg, method, precision, tuple(x.shape[1:]), device)
        learner.train_step(x, y)  # first step outside: lazy initialisation may sync
        torch.cuda.synchronize()
        try:
            torch.cuda.set_sync_debug_mode("error")
            for _ in range(2):
                learner.train_step(x, y)
            out[f"{method}/{precision}"] = "ok"
        except RuntimeError as e:
            out[f"{method}/{precision}"] = f"SYNC: {str(e).splitlines()[0]}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    return out


def compile_smoke(device: torch.device, data: dict[str, torch.Tensor], cfg: B.Config, out: dict[str, Any],
                  save: Any) -> None:
    """A few compiled steps of the fast SigProp path and of BP; ``out`` filled (and saved) as they finish."""
    loader = B.make_loader(cfg, data, "tensor", device, 0)
    it = B.batches(loader, device)
    for method in ("sp-fused-pc", "bp"):
        c = B.replace(cfg, compile=True)
        learner = B.build_learner(c, method, "fp32", tuple(data["train_images"].shape[1:]), device)
        t0 = time.perf_counter()
        loss = None
        for _ in range(5):
            x, y = next(it)
            loss, _ = learner.train_step(x, y)
        B.sync(device)
        t1 = time.perf_counter()
        for _ in range(10):
            x, y = next(it)
            loss, _ = learner.train_step(x, y)
        B.sync(device)
        out[method] = {"finite": bool(torch.isfinite(loss).item()), "first_5_steps_s": t1 - t0,
                       "next_10_steps_s": time.perf_counter() - t1}
        print(f"torch.compile {method:12s} finite loss {out[method]['finite']}, first 5 steps "
              f"{out[method]['first_5_steps_s']:.1f} s, next 10 steps {out[method]['next_10_steps_s']:.2f} s")
        save()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="small data (checks the logic, e.g. on a CPU)")
    p.add_argument("--checks", default="equivalence,nosync", help="comma-separated: equivalence, nosync, compile")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # see PERFORMANCE.md: a shared CPU stalls OpenMP threads
    cfg = B.Config(device=args.device, n_train=256 if args.tiny else 10_000, n_test=128 if args.tiny else 2_000)
    if args.tiny:
        cfg = B.replace(cfg, feat_mult=0.0625, num_hidden=64, batch=32)
    data = B.load_data(cfg)
    report: dict[str, Any] = {"machine": B.machine(args.device), "torch": torch.__version__}
    ok = True
    checks = args.checks.split(",")
    if "equivalence" in checks:
        t0 = time.perf_counter()
        report["equivalence_fp64_max_relative"] = eq = equivalence(device, data)
        for name, v in eq.items():
            good = v <= 1e-5
            ok &= good
            print(f"equivalence {name:28s} max relative difference {v:.2e}  {'ok' if good else 'FAIL (> 1e-5)'}")
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    if "nosync" in checks and device.type != "cuda":
        print("no-sync check skipped: it needs a CUDA device")
    if "nosync" in checks and device.type == "cuda":
        report["no_sync"] = ns = no_sync(device, data, cfg)
        for name, v in ns.items():
            ok &= v == "ok"
            print(f"no host sync in a step  {name:24s} {v}")
    if "compile" in checks:
        report["compile"] = cs = {}
        try:
            compile_smoke(device, data, cfg, cs, lambda: save(report, args.json))
            ok &= all(v["finite"] for v in cs.values())
        except Exception as e:  # a compiler failure is reported, not fatal: compile is an option
            cs["error"] = repr(e)[:2000]
            print(f"torch.compile failed: {e!r}"[:500])
    report["ok"] = ok
    save(report, args.json)
    return 0 if ok else 1


def save(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
