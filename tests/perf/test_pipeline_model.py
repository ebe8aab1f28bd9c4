"""experiments/pipeline_model.py: its model of pipeline stages and data parallelism follows its formulas, and the
script measures a real network's layers and this machine's links and writes what it predicts."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_model():  # noqa: ANN201 - the script, imported as a module
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import pipeline_model
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    return pipeline_model


def test_layouts_follow_the_model() -> None:
    """Four layers of 1 s: two stages take 2 s per batch, and an epoch of n batches fills and drains once; two
    replicas take half the time plus one all-reduce per gradient tensor; a slow link adds its messages to a CPU
    stage and limits an overlapped (GPU) one only when a message outlasts the stage."""
    model = load_model()
    layers = model.Layers(signal=0.0, costs=[1.0] * 4, together_signal=0.0, together_costs=[1.5] * 4,
                          together_half_batch=3.5, message_bytes=[100] * 4, gradient_bytes=[[40, 8]] * 4,
                          batch_size=10, batches=5)
    free = {"p2p": (0.0, math.inf), "all_reduce": (0.0, math.inf)}
    speed, bounds = model.layout_speed(layers, 2, 1, free, batches=5, overlapped=False)
    assert bounds == [0, 2, 4] and speed == pytest.approx(5 * 10 / (4 * 2 + 2 * 2))
    speed, _ = model.layout_speed(layers, 1, 2, free, batches=5, overlapped=False)
    assert speed == pytest.approx(10 / 2)
    reduce = {"p2p": (0.0, math.inf), "all_reduce": (0.01, 1000.0)}  # 10 ms per call; 2 (N-1)/N of the bytes
    speed, _ = model.layout_speed(layers, 1, 2, reduce, batches=5, overlapped=False)
    assert speed == pytest.approx(10 / (2 + 8 * 0.01 + 4 * 48 / 1000))
    speed, _ = model.layout_speed(layers, 1, 2, free, batches=5, overlapped=False, shared=True)
    assert speed == pytest.approx(10 / 3.5)  # the measured half batch, two processes at once
    slow = {"p2p": (0.5, math.inf), "all_reduce": (0.0, math.inf)}
    speed, _ = model.layout_speed(layers, 2, 1, slow, batches=5, overlapped=False)
    assert speed == pytest.approx(5 * 10 / (4 * 2.5 + 2 * 2.5))  # each stage sends or receives one message
    speed, _ = model.layout_speed(layers, 2, 1, slow, batches=5, overlapped=True)
    assert speed == pytest.approx(5 * 10 / (4 * 2 + 2 * 2))  # overlapped, and shorter than a stage
    assert model.fit({1000: 0.002, 3000: 0.004, 5000: 0.006}) == pytest.approx((0.001, 1e6))


@pytest.mark.slow
def test_the_model_measures_a_network_and_this_machine(tmp_path: Path, mnist_data_dir: Path) -> None:
    """The MNIST MLP recipe on 512 images, narrowed: every layer timed, this machine's links fitted, the two-process
    layouts set beside the figures of a benchmark's JSON, the predictions for 2 to 8 GPUs written."""
    check = tmp_path / "bench.json"
    check.write_text(json.dumps({"rows": [{"recipe": "mlp", "method": "sigprop", "layout": layout, "median": speed}
                                          for layout, speed in (("a", 1000.0), ("c", 600.0), ("d", 1400.0))]}))
    out = tmp_path / "model.json"
    command = [sys.executable, str(ROOT / "experiments" / "pipeline_model.py"), "--recipes", "mlp", "--data-dir",
               str(mnist_data_dir), "--check", str(check), "--json", str(out), "--set", "dataset.train_subset=512",
               "model.num_hidden=64"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    for link in record["cpu_links"].values():
        assert link[0] >= 0 and link[1] > 0
    mlp = record["recipes"]["mlp"]
    layers = mlp["layers"]
    assert len(layers["costs"]) == len(layers["together_costs"]) == len(layers["message_bytes"]) == 3  # layer01, layer02, output
    assert all(c > 0 for c in layers["costs"]) and layers["batches"] == 4
    assert mlp["cpu"]["d"]["measured"] == 1400.0 and mlp["cpu"]["d"]["model"] > 0
    for figures in mlp["gpu"].values():
        assert set(figures) == {"2", "4", "8"} and figures["2"]["2x1"]["speed_up"] > 1
    assert "| two processes on this CPU |" in result.stdout and "| 1400 | 1.40 |" in result.stdout
