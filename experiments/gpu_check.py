"""Correctness checks of the fast training paths on the benchmark's device (run by ``gpu_check.sh``).

    python experiments/gpu_check.py [--checks equivalence,nosync,compile] [--json FILE] [train.py overrides ...]

1. ``equivalence``: in float64 (where the rule's equivalence shows without fp32's rounding noise, see
   tests/perf/test_equivalence.py), per-class vs per-sample signal, fused vs layer-wise and low-memory
   vs layer-wise give the same weights after 20 steps on the configured images (a narrow VGG-8).
2. ``nosync``: no host synchronisation inside a training step (``torch.cuda.set_sync_debug_mode("error")``)
   for backprop and the fast SigProp paths, fp32 and bf16 (CUDA only).
3. ``compile``: ``step.compile=true`` trains a few steps with a finite loss, and how long they take.

The methods and the configuration are the benchmark's (``benchmark.py``), i.e. the training app's.
Prints one line per check and writes ``--json``; exits non-zero if a check fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

# The benchmark's methods, built as it builds them: experiments/benchmark.py beside this script (Python puts a
# script's own folder first on its path). Reading records and the machine's name come from the package.
import benchmark as B
from sigprop.tracking.records import machine

# The equivalence check's network: the configured one made narrow, without dropout (per-class signals are
# exact only without it), and a recompute slice that does not divide the batch.
SMALL = ["model.feat_mult=0.0625", "model.num_hidden=32", "model.dropout=0", "step.recompute_chunk=12"]


def train_small(overrides: list[str], method: str, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                data: Any) -> dict[str, torch.Tensor]:
    """20 float64 steps of ``method`` from the shared seed; the weights after them."""
    step = B.build_step([*overrides, *SMALL], method, "fp32", data, device)
    step.model.to(torch.float64)
    # The label formatters make float32 one-hot rows; cast them like the rest of the model.
    step.model.signal.module[0].register_forward_hook(lambda m, i, o: (o[0], o[1].to(torch.float64)))
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        idx = torch.randint(0, len(y), (32,), generator=g).to(x.device)
        step.train_step(x[idx], y[idx])
    return {k: v.detach().double().cpu() for k, v in step.model.state_dict().items()}


def max_relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in a if b[k].numel())


def equivalence(overrides: list[str], data: Any, device: torch.device) -> dict[str, float]:
    loader = B.TensorLoader(data.train_images[:2000], data.train_labels[:2000], 2000, data.mean, data.std, device=device)
    x, y = next(iter(loader))
    x = x.double()
    ref = train_small(overrides, "sp-layerwise", x, y, device, data)
    pairs = {"per_class_vs_per_sample": "sp-layerwise-pc", "fused_vs_layerwise": "sp-fused", "lowmem_vs_layerwise": "sp-lowmem"}
    return {name: max_relative(train_small(overrides, method, x, y, device, data), ref) for name, method in pairs.items()}


def no_sync(overrides: list[str], data: Any, device: torch.device) -> dict[str, str]:
    """Train steps under ``set_sync_debug_mode("error")``: any host synchronisation raises."""
    out = {}
    cfg = B.compose_config(overrides)
    x, y = next(B.batches(B.make_loader(data, cfg.batch_size, "bp", device, cfg.seed), device))
    for method, precision in (("bp", "fp32"), ("sp-fused", "fp32"), ("sp-fused-pc", "fp32"), ("sp-fused-pc", "bf16"),
                              ("sp-layerwise-pc", "fp32"), ("sp-lowmem-pc", "fp32")):
        step = B.build_step(overrides, method, precision, data, device)
        step.train_step(x, y)  # first step outside: lazy initialisation may sync
        torch.cuda.synchronize()
        try:
            torch.cuda.set_sync_debug_mode("error")
            for _ in range(2):
                step.train_step(x, y)
            out[f"{method}/{precision}"] = "ok"
        except RuntimeError as e:
            out[f"{method}/{precision}"] = f"SYNC: {str(e).splitlines()[0]}"
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    return out


def compile_smoke(overrides: list[str], data: Any, device: torch.device, out: dict[str, Any], save: Callable[[], None]) -> None:
    """A few compiled steps of the fast SigProp path and of backprop; ``out`` filled (and saved) as they finish."""
    cfg = B.compose_config(overrides)
    it = B.batches(B.make_loader(data, cfg.batch_size, "bp", device, cfg.seed), device)
    for method in ("sp-fused-pc", "bp"):
        step = B.build_step([*overrides, "step.compile=true"], method, "fp32", data, device)
        t0 = time.perf_counter()
        loss = torch.zeros(())
        for _ in range(5):
            loss, _ = step.train_step(*next(it))
        B.sync(device)
        t1 = time.perf_counter()
        for _ in range(10):
            loss, _ = step.train_step(*next(it))
        B.sync(device)
        out[method] = {"finite": bool(torch.isfinite(loss).item()), "first_5_steps_s": t1 - t0,
                       "next_10_steps_s": time.perf_counter() - t1}
        print(f"torch.compile {method:12s} finite loss {out[method]['finite']}, first 5 steps "
              f"{out[method]['first_5_steps_s']:.1f} s, next 10 steps {out[method]['next_10_steps_s']:.2f} s")
        save()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="train.py overrides: the network, data and device to check on")
    p.add_argument("--checks", default="equivalence,nosync", help="comma-separated: equivalence, nosync, compile")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_intermixed_args()  # options and overrides in any order
    data, device = B.load_data(args.overrides)
    report: dict[str, Any] = {"machine": machine(device), "torch": torch.__version__, "overrides": args.overrides}
    ok = True
    checks = args.checks.split(",")
    if "equivalence" in checks:
        t0 = time.perf_counter()
        report["equivalence_fp64_max_relative"] = eq = equivalence(args.overrides, data, device)
        for name, v in eq.items():
            good = v <= 1e-5
            ok &= good
            print(f"equivalence {name:28s} max relative difference {v:.2e}  {'ok' if good else 'FAIL (> 1e-5)'}")
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    if "nosync" in checks and device.type != "cuda":
        print("no-sync check skipped: it needs a CUDA device")
    if "nosync" in checks and device.type == "cuda":
        report["no_sync"] = ns = no_sync(args.overrides, data, device)
        for name, v in ns.items():
            ok &= v == "ok"
            print(f"no host sync in a step  {name:24s} {v}")
    if "compile" in checks:
        report["compile"] = cs = {}
        try:
            compile_smoke(args.overrides, data, device, cs, lambda: save(report, args.json))
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
