"""Record the metrics of tests/app/reference_metrics.json, and measure how far other kernels move them.

    python tests/app/record_reference_metrics.py record    # train every case (one thread) and write the metrics
    python tests/app/record_reference_metrics.py spread    # train every case under each variant, write the spread

A machine with another CPU runs other kernels: other vector widths, blockings and summation orders,
so its metrics differ from the recorded ones by rounding, grown over two epochs of training. The
``spread`` command imitates that on one machine: each variant below changes which kernels torch
runs (its own vectorised kernels, MKL's matrix products, oneDNN's convolutions) or how many threads
share a reduction, and the largest deviation of each kind of metric over all cases and variants is
written beside each case (``spread``). tests/app/test_app_reference_metrics.py sets its tolerances from it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
FILE = HERE / "reference_metrics.json"
TRAIN = HERE.parents[1] / "train.py"

# name: environment. The recorded run is "one thread"; the tests run with one thread too.
VARIANTS = {
    "one thread": {"OMP_NUM_THREADS": "1"},
    "two threads": {"OMP_NUM_THREADS": "2"},
    "ATen AVX2 kernels": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"},
    "MKL AVX2 products": {"OMP_NUM_THREADS": "1", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2"},
    "oneDNN AVX2 kernels": {"OMP_NUM_THREADS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "all AVX2, two threads": {
        "OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
}


def run_case(common: list[str], overrides: list[str], env: dict[str, str]) -> list[dict[str, float]]:
    """Train one case in a fresh process with ``env`` and return its metrics rows, without timings."""
    with tempfile.TemporaryDirectory() as tmp:
        args = [*common, *overrides, f"hydra.run.dir={tmp}/run"]
        full_env = {**os.environ, "WANDB_MODE": "disabled", **env}
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TRAIN.parent), os.environ.get("PYTHONPATH")]))
        result = subprocess.run([sys.executable, str(TRAIN), *args], env=full_env, capture_output=True, text=True, cwd=tmp)
        if result.returncode != 0:
            raise SystemExit(f"error: train.py {' '.join(args)} failed:\n{result.stderr[-2000:]}")
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.endswith("samples_per_s")} for row in rows]


def deviations(got: list[dict[str, float]], want: list[dict[str, float]]) -> dict[str, float]:
    """The largest relative deviation of the losses and the largest absolute one of the accuracies."""
    loss = acc = 0.0
    for row, ref in zip(got, want, strict=True):
        for key, value in ref.items():
            if key.endswith("/acc"):
                acc = max(acc, abs(row[key] - value))
            elif key.endswith("loss"):
                loss = max(loss, abs(row[key] - value) / abs(value))
    return {"loss_rel": loss, "acc_abs": acc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["record", "spread"])
    args = parser.parse_args()
    data = json.loads(FILE.read_text())
    if args.command == "record":
        for name, case in data["cases"].items():
            case["metrics"] = run_case(data["common"], case["overrides"], VARIANTS["one thread"])
            print(f"{name}: recorded", flush=True)
            case.pop("spread", None)  # measured against the old figures
    else:
        for name, case in data["cases"].items():
            case["spread"] = {"loss_rel": 0.0, "acc_abs": 0.0}
            for variant, env in VARIANTS.items():
                got = deviations(run_case(data["common"], case["overrides"], env), case["metrics"])
                case["spread"] = {k: max(case["spread"][k], got[k]) for k in got}
                print(f"{name:36s} {variant:24s} loss {got['loss_rel']:.2e} rel  acc {got['acc_abs']:.3f}", flush=True)
        data["spread"] = {
            "about": "each case's spread: its largest deviation from the recorded metrics over the variants "
            "(environments in tests/app/record_reference_metrics.py), losses relative, accuracies absolute",
            "variants": list(VARIANTS),
        }
    FILE.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
