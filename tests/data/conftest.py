"""Real data for the data tests: the shared MNIST and CIFAR-10 copies and the Debian Fashion-MNIST package."""
from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("SIGPROP_SHARED_DATA", ROOT.parent / "shared" / "data"))
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR_TAR = SHARED_DATA / "cifar10-jpeg.tar.gz"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_PER_CLASS = {"train": 20, "test": 8}  # images per class extracted from the real archive


@pytest.fixture(scope="session")
def mnist_source() -> Path:
    """The folder with the four original MNIST IDX .gz files."""
    source = SHARED_DATA / "MNIST" / "raw"
    if not (source / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST not found: put the four IDX .gz files in {source} or set SIGPROP_SHARED_DATA")
    return source


@pytest.fixture(scope="session")
def fashion_source() -> Path:
    """The Fashion-MNIST IDX files installed by the Debian package (never skipped: CI installs it)."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"Fashion-MNIST not found in {FASHION_MNIST}: run `apt-get install -y dataset-fashion-mnist` (as root)")
    return FASHION_MNIST


@pytest.fixture(scope="session")
def cifar_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding ``cifar10-jpeg/{train,test}/<class>/*.jpg``: 280 real images from the shared archive."""
    if not CIFAR_TAR.is_file():
        pytest.fail(f"CIFAR-10 JPEG archive not found: expected {CIFAR_TAR} (or set SIGPROP_SHARED_DATA)")
    data_dir = tmp_path_factory.mktemp("cifar_data")
    left = {(split, c): n for split, n in CIFAR_PER_CLASS.items() for c in CIFAR_CLASSES}
    with tarfile.open(CIFAR_TAR, "r|gz") as tar:  # streamed: stop as soon as every class has its images
        for member in tar:
            parts = member.name.split("/")
            key = tuple(parts[1:3])
            if member.isfile() and len(parts) == 4 and left.get(key, 0) > 0:
                tar.extract(member, data_dir, filter="data")
                left[key] -= 1
                if not any(left.values()):
                    break
    assert not any(left.values()), f"{CIFAR_TAR} lacks images for {[k for k, v in left.items() if v]}"
    return data_dir
