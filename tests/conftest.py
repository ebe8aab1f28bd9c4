"""Shared fixtures: real datasets prepared once from the copies beside the project."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SIGPROP_SHARED_DATA", ROOT.parent / "shared" / "data"))
DATA_DIR = Path(os.environ.get("SIGPROP_DATA_DIR", ROOT / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """A data folder holding MNIST in torchvision's layout (imported from the shared copy if needed)."""
    from sigprop.data.offline import import_idx

    if not (DATA_DIR / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
        source = SHARED_DATA / "MNIST" / "raw"
        if not source.exists():
            pytest.fail(f"MNIST not found: put the IDX files in {source} or set SIGPROP_SHARED_DATA")
        import_idx(source, DATA_DIR, "MNIST")
    return DATA_DIR


@pytest.fixture(scope="session")
def mnist(data_dir: Path):
    """Real MNIST as normalised float tensors: ``(x_train, y_train, x_test, y_test)``."""
    import torchvision

    train = torchvision.datasets.MNIST(str(data_dir), train=True, download=False)
    test = torchvision.datasets.MNIST(str(data_dir), train=False, download=False)

    def norm(images):
        return ((images.float() / 255 - 0.1307) / 0.3081).unsqueeze(1)

    return norm(train.data), train.targets, norm(test.data), test.targets
