"""The MNIST subset shipped in the package: present, stratified, exact copies of real MNIST, rebuilt identically."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from sigprop.data import Embedded, TensorLoader, stratified_indices
from sigprop.data.datasets import embedded_path
from sigprop.data.offline import read_idx

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("train_images", "train_labels", "test_images", "test_labels")


@pytest.fixture(scope="module")
def build_embedded() -> ModuleType:
    """The builder of the shipped subset (``python -m sigprop.data.embedded``)."""
    from sigprop.data.embedded import build

    return build


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        assert sorted(npz.files) == sorted(KEYS)
        return {k: npz[k] for k in KEYS}


def test_shipped_subset_is_real_stratified_mnist(mnist_source: Path) -> None:
    path = Path(str(embedded_path()))
    assert path.is_file(), f"{path} missing: run python -m sigprop.data.embedded --source DIR"
    assert path.stat().st_size < 4_000_000
    shipped = _arrays(path)
    assert shipped["train_images"].shape == (10_000, 1, 28, 28) and shipped["train_images"].dtype == np.uint8
    assert shipped["test_images"].shape == (10_000, 1, 28, 28)

    full_train_y = read_idx(mnist_source / "train-labels-idx1-ubyte.gz")
    full_train_x = read_idx(mnist_source / "train-images-idx3-ubyte.gz")
    # The whole MNIST test set, in its original order.
    assert np.array_equal(shipped["test_images"][:, 0], read_idx(mnist_source / "t10k-images-idx3-ubyte.gz"))
    assert np.array_equal(shipped["test_labels"], read_idx(mnist_source / "t10k-labels-idx1-ubyte.gz"))
    # Training images are real MNIST rows, every class in its MNIST proportion.
    idx = stratified_indices(full_train_y, 10_000, seed=0).numpy()
    assert np.array_equal(shipped["train_images"][:, 0], full_train_x[idx])
    assert np.array_equal(shipped["train_labels"], full_train_y[idx])
    expected = np.bincount(full_train_y) * 10_000 / 60_000
    assert np.all(np.abs(np.bincount(shipped["train_labels"]) - expected) < 1)


def test_build_script_rebuilds_the_shipped_arrays(mnist_source: Path, tmp_path: Path, build_embedded: ModuleType) -> None:
    out = tmp_path / "rebuilt.npz"
    result = subprocess.run(
        [sys.executable, "-m", "sigprop.data.embedded", "--source", str(mnist_source), "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    rebuilt, shipped = _arrays(out), _arrays(Path(str(embedded_path())))
    for key in KEYS:
        assert np.array_equal(rebuilt[key], shipped[key]) and rebuilt[key].dtype == shipped[key].dtype, key
    # The writer is deterministic: a second build gives the same bytes (no timestamps inside).
    build_embedded.build(mnist_source, tmp_path / "again.npz", 10_000, 10_000, 0)
    assert (tmp_path / "again.npz").read_bytes() == out.read_bytes()


def test_build_script_rejects_a_missing_source(tmp_path: Path, build_embedded: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_embedded.main(["--source", str(tmp_path), "--out", str(tmp_path / "x.npz")])
    assert exit_info.value.code == 2
    assert f"--source {tmp_path}: train-images-idx3-ubyte(.gz) not found" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_embedded_loads_into_batches() -> None:
    data = Embedded(mean=[0.1307], std=[0.3081], crop_padding=2).load()
    assert data.name == "embedded" and data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert data.train_labels.dtype == torch.int64 and data.train_images.dtype == torch.uint8
    assert data.augment is not None and data.augment.crop_padding == 2
    loader = TensorLoader(data.test_images, data.test_labels, 2000, data.mean, data.std)
    x, y = next(iter(loader))
    assert x.shape == (2000, 1, 28, 28) and y.shape == (2000,)
    # MNIST normalisation centres real digits: mean near 0, standard deviation near 1.
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def test_embedded_file_setting_is_checked() -> None:
    with pytest.raises(ValueError, match=r"dataset\.file='nope\.npz': no such file"):
        Embedded(file="nope.npz")
