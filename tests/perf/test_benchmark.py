"""The benchmark's CPU mode runs end to end on a tiny configuration and writes the JSON it promises."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_tiny_cpu_writes_json(tmp_path: Path, cifar10_subset) -> None:
    # cifar10_subset: the real images are extracted (the benchmark reads the same JPEG tree).
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--preset", "tiny", "--device", "cpu",
           "--methods", "bp,sp-lowmem-pc", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"machine", "torch", "config", "epoch_samples", "results"} <= report.keys()
    assert report["config"]["device"] == "cpu" and report["memory_isolated"]
    assert [r["method"] for r in report["results"]] == ["bp", "sp-lowmem-pc"]
    for r in report["results"]:
        assert "error" not in r, r
        for key in ("samples_per_s", "s_per_epoch", "cpu_s_per_epoch", "test_acc", "rss_step_mib", "cpu_alloc_step_mib"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] >= 0, (key, r[key])
        assert r["samples_per_s"] > 0 and 0 <= r["test_acc"] <= 1
        assert r["steps"] == report["config"]["steps"] and r["epochs_acc"][-1] == r["test_acc"]
    assert "| method | precision | samples/s |" in proc.stdout  # the table
