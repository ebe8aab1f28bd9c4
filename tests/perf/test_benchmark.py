"""The benchmark runs end to end on a tiny configuration of the app and writes the JSON it promises."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A narrow VGG-6 on 256 images of the embedded MNIST subset: seconds per method.
TINY = ["dataset.train_subset=256", "dataset.test_subset=128", "model=vgg6", "model.feat_mult=0.0625",
        "model.num_hidden=64", "batch_size=32", "device=cpu", "threads=1"]


@pytest.mark.slow
def test_benchmark_tiny_cpu_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--methods", "bp,sp-lowmem-pc", "--steps", "6",
           "--warmup", "2", "--chunk", "2", "--mem-steps", "1", "--profile-steps", "1", "--json", str(out), *TINY]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert {"machine", "torch", "overrides", "timing", "results"} <= report.keys()
    assert report["overrides"] == TINY and report["memory_isolated"]
    assert [r["method"] for r in report["results"]] == ["bp", "sp-lowmem-pc"]
    for r in report["results"]:
        assert "error" not in r, r
        for key in ("samples_per_s", "s_per_epoch", "cpu_s_per_epoch", "test_acc", "rss_step_mib", "cpu_alloc_step_mib"):
            assert isinstance(r[key], (int, float)) and math.isfinite(r[key]) and r[key] >= 0, (key, r[key])
        assert r["samples_per_s"] > 0 and 0 <= r["test_acc"] <= 1
        assert r["steps"] == 6 and r["epochs_acc"][-1] == r["test_acc"]
    assert "| method | precision | samples/s |" in proc.stdout  # the table


def test_methods_are_app_configurations() -> None:
    """Every method composes into a config of the app: the benchmark trains what train.py trains."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import benchmark
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    for name in benchmark.METHODS:
        cfg = benchmark.method_config(TINY, name, "bf16")
        assert cfg.step.precision == "bf16" and cfg.model.name == "vgg6"
        assert (cfg.propagator._target_ == "sigprop.propagators.Identity") == name.startswith("bp")
        assert cfg.signal.per_class == name.endswith("-pc")
