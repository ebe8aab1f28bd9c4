"""Helpers for the training application's tests: compose configs in-process, run train.py in a subprocess.

Imported by the tests as ``app_helpers`` (pytest puts this folder on ``sys.path``)."""
from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import sigprop.engine.config  # noqa: F401  registers train_schema, the first entry of conf/config.yaml
from sigprop.data.datasets import ImageData
from sigprop.engine import parts
from sigprop.engine.rundir import choices_of
from sigprop.engine.step import TrainStep

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
TRAIN = ROOT / "train.py"

# A run small enough for a test: 1,000/500 real embedded-MNIST images, a 64-unit MLP, one epoch.
TINY = (
    "dataset.train_subset=1000",
    "dataset.test_subset=500",
    "model=mlp_small",
    "model.num_hidden=64",
    "batch_size=50",
    "test_batch_size=500",
    "optimizer.lr=2e-3",
    "epochs=1",
    "scheduler.milestones=[1]",
)


def options(group: str) -> list[str]:
    """Every option of a config group, as listed in conf/<group>/."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """``conf/config.yaml`` composed with ``overrides``, Hydra's node included (for the group choices)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def train(args: Sequence[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python train.py *args`` from ``cwd`` (W&B forced offline, as on a machine without an API key)."""
    # One thread: these runs are tiny, and OpenMP threads slow to a crawl when other processes hold the cores.
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # This checkout's sigprop in every process a run starts (a launcher's workers too), whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(TRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def train_ok(args: Sequence[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``train`` that fails the test, showing train.py's output, unless it exits with 0."""
    result = train(args, cwd, timeout)
    assert result.returncode == 0, f"train.py {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The rows of ``<run_dir>/metrics.jsonl``."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def without_timing(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Metrics rows without the keys that measure speed (they differ between identical runs)."""
    return [{k: v for k, v in row.items() if not k.endswith("samples_per_s")} for row in rows]


def load_train() -> ModuleType:
    """train.py as a module (its ``build_step`` and ``build``), loaded once."""
    if "train" not in sys.modules:
        spec = importlib.util.spec_from_file_location("train", TRAIN)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["train"] = module
        spec.loader.exec_module(module)
    return sys.modules["train"]


def load_dataset(cfg: DictConfig) -> ImageData:
    """The dataset ``cfg`` configures, loaded."""
    return parts.load_data(parts.build_group(cfg, "dataset", choices_of(cfg)))


def build_step(cfg: DictConfig, data: ImageData) -> TrainStep:
    """The training step ``cfg`` describes for ``data``, built as train.py builds it."""
    return load_train().build_step(cfg, data, choices_of(cfg))


def load_script(name: str) -> ModuleType:
    """``experiments/<name>.py`` as a module (experiments/ is a folder of scripts, not a package; what they share
    they import from ``sigprop``)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_compare() -> ModuleType:
    """experiments/compare.py as a module."""
    return load_script("compare")


def wandb_records(run_dir: Path) -> list[Any]:
    """Every record of the offline W&B run in ``<run_dir>/wandb/`` (``wandb_internal_pb2.Record``), in order.

    The ``.wandb`` file is W&B's record log: a 7-byte header (``:W&B``, magic, version), then 32 KiB
    blocks of chunks, each with a 7-byte header (checksum, length, type: full, first, middle, last)
    holding a serialized record; a block's last bytes are padding when no chunk header fits."""
    from wandb.proto import wandb_internal_pb2

    (path,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B record log"
    records, chunk, pos, block = [], b"", 7, 32 * 1024
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records
