"""Test data, all in one place: the MNIST subset shipped in the package, and the real datasets of
``SIGPROP_TEST_DATA`` for the tests that need more.

``SIGPROP_TEST_DATA=DIR`` names a folder laid out like this project's shared data folder
(``MNIST/raw/*-ubyte.gz``, ``cifar10-jpeg.tar.gz``); Fashion-MNIST comes from the Debian package
``dataset-fashion-mnist``. Without the variable, the tests that need them skip with one line that
says so. With it, every test must run: a missing file fails its test, and a session that skipped
any test fails (``.ci/run`` sets the variable).
"""
from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

TEST_DATA = "SIGPROP_TEST_DATA"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_SUBSET = {"train": 300, "test": 100}  # images per class extracted from the archive (3,000 / 1,000)
CIFAR10_TREE = {"train": 20, "test": 8}  # images per class in the small tree of the data tests (200 / 80)
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
TEST_DATA_FILES = "MNIST/raw/*-ubyte.gz and cifar10-jpeg.tar.gz"  # what $SIGPROP_TEST_DATA holds, as the README says


def real_data(relative: str, what: str) -> Path:
    """``$SIGPROP_TEST_DATA/relative``; skips the test when the variable is unset, fails it when the file is missing."""
    root = os.environ.get(TEST_DATA)
    if not root:
        pytest.skip(f"needs {what}: set {TEST_DATA}=DIR (a folder with {TEST_DATA_FILES})")
    path = Path(root).expanduser() / relative
    if not path.exists():
        pytest.fail(f"{path} not found ({TEST_DATA}={root} must hold {TEST_DATA_FILES})")
    return path


# ----------------------------------------------------------------------------- MNIST


@pytest.fixture(scope="session")
def mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real MNIST from the subset shipped in the package (10,000 training images, the whole 10,000-image
    test set) as normalised float tensors: ``(x_train, y_train, x_test, y_test)``."""
    from sigprop.data import Embedded

    data = Embedded().load()

    def norm(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - MNIST_MEAN) / MNIST_STD

    return norm(data.train_images), data.train_labels, norm(data.test_images), data.test_labels


@pytest.fixture(scope="session")
def mnist_source() -> Path:
    """The folder with the four original MNIST IDX ``.gz`` files (60,000 / 10,000 images)."""
    return real_data("MNIST/raw", "the full MNIST IDX files")


@pytest.fixture(scope="session")
def mnist_data_dir(mnist_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the full MNIST in torchvision's layout (``MNIST/raw``), as ``prepare mnist`` leaves it."""
    from sigprop.data.offline import import_idx

    data_dir = tmp_path_factory.mktemp("mnist_data")
    import_idx(mnist_source, data_dir, "MNIST")
    return data_dir


@pytest.fixture(scope="session")
def fashion_source() -> Path:
    """The Fashion-MNIST IDX files installed by the Debian package."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get(TEST_DATA):
            pytest.fail(f"Fashion-MNIST not found in {FASHION_MNIST}: apt-get install -y dataset-fashion-mnist")
        pytest.skip(f"needs Fashion-MNIST: apt-get install dataset-fashion-mnist (puts it in {FASHION_MNIST})")
    return FASHION_MNIST


# ----------------------------------------------------------------------------- CIFAR-10


def extract_cifar10(archive: Path, dest: Path, per_class: dict[str, int]) -> Path:
    """Extract the images numbered below ``per_class[split]`` of every class from the JPEG archive into
    ``dest/cifar10-jpeg/{train,test}/<class>/NNNN.jpg``; returns ``dest``. Streams the archive once and
    stops as soon as every image is out."""
    left = len(CIFAR10_CLASSES) * sum(per_class.values())
    with tarfile.open(archive, "r|gz") as tar:
        for member in tar:
            parts = member.name.split("/")  # cifar10-jpeg/<split>/<class>/NNNN.jpg
            if member.isfile() and len(parts) == 4 and parts[1] in per_class and parts[3][:-4].isdigit():
                if int(parts[3][:-4]) < per_class[parts[1]]:
                    tar.extract(member, dest, filter="data")
                    left -= 1
                    if left == 0:
                        break
    if left:
        raise FileNotFoundError(f"{archive} lacks {left} of the images numbered below {per_class} per class")
    return dest


@pytest.fixture(scope="session")
def cifar10_extracted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``cifar10-jpeg/`` with 300 training and 100 test images per class of the real archive."""
    archive = real_data("cifar10-jpeg.tar.gz", "the CIFAR-10 JPEG archive")
    return extract_cifar10(archive, tmp_path_factory.mktemp("cifar10"), CIFAR10_SUBSET)


@pytest.fixture(scope="session")
def cifar_tree(cifar10_extracted: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder of its own holding ``cifar10-jpeg/{train,test}/<class>/*.jpg``: 20 training and 8 test
    images per class (280 real images)."""
    data_dir = tmp_path_factory.mktemp("cifar_data")
    for split, n in CIFAR10_TREE.items():
        for name in CIFAR10_CLASSES:
            folder = data_dir / "cifar10-jpeg" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                shutil.copyfile(cifar10_extracted / "cifar10-jpeg" / split / name / f"{i:04d}.jpg", folder / f"{i:04d}.jpg")
    return data_dir


@pytest.fixture(scope="session")
def cifar10_subset(cifar10_extracted: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A real CIFAR-10 subset as normalised ``(N, 3, 32, 32)`` float tensors, ordered by class:
    ``(x_train, y_train, x_test, y_test)`` with 3,000 training and 1,000 test images."""
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    root = cifar10_extracted / "cifar10-jpeg"

    def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for label, name in enumerate(CIFAR10_CLASSES):
            for i in range(CIFAR10_SUBSET[split]):
                with Image.open(root / split / name / f"{i:04d}.jpg") as image:
                    images.append(np.asarray(image.convert("RGB")))
                labels.append(label)
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        return (x - mean) / std, torch.tensor(labels)

    return (*load("train"), *load("test"))


# ----------------------------------------------------------------------------- threads and markers


@pytest.fixture(autouse=True, scope="session")
def one_thread() -> Iterator[None]:
    """One torch thread: the tests' networks are small, and when other processes hold the cores a second
    OpenMP thread waits for one at every barrier (steps then take 10-30 times longer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Whole modules of minutes-long learning runs, marked here so the quick check (-m "not slow") leaves them out.
SLOW_MODULES = ("test_learning.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


# ----------------------------------------------------------------------------- every test must run in CI


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``SIGPROP_TEST_DATA`` set, a skipped test fails the session: the real-data tests must all have run."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get(TEST_DATA) and skipped and exitstatus == pytest.ExitCode.OK:
        reporter.write_line(f"{len(skipped)} tests skipped although {TEST_DATA} is set: every test must run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
