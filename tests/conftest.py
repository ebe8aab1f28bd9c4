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


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_SUBSET = {"train": 300, "test": 100}  # images per class taken from each split


@pytest.fixture(scope="session")
def cifar10_subset():
    """A real CIFAR-10 subset as normalised ``(N, 3, 32, 32)`` float tensors: ``(x_train, y_train, x_test, y_test)``.

    The images numbered below ``CIFAR10_SUBSET[split]`` of every class (3,000 train, 1,000 test),
    extracted once from the shared JPEG archive into ``data/cifar10-subset``; ordered by class.
    """
    import tarfile

    import numpy as np
    import torch
    from PIL import Image

    # A folder of its own: data/cifar10-jpeg is where `dataset=cifar10_jpeg` expects the full copy.
    parent = DATA_DIR / "cifar10-subset"
    root = parent / "cifar10-jpeg"
    marker = root / (".subset-" + "-".join(f"{k}{v}" for k, v in sorted(CIFAR10_SUBSET.items())))
    if not marker.exists():
        archive = SHARED_DATA / "cifar10-jpeg.tar.gz"
        if not archive.exists():
            pytest.fail(f"CIFAR-10 not found: expected {archive} (or set SIGPROP_SHARED_DATA)")
        left = len(CIFAR10_CLASSES) * sum(CIFAR10_SUBSET.values())
        with tarfile.open(archive, "r|gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if (
                    member.isfile()
                    and len(parts) == 4
                    and parts[1] in CIFAR10_SUBSET
                    and parts[3][:-4].isdigit()
                    and int(parts[3][:-4]) < CIFAR10_SUBSET[parts[1]]
                ):
                    tar.extract(member, parent, filter="data")
                    left -= 1
                    if left == 0:
                        break
        marker.touch()

    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)

    def load(split: str):
        images, labels = [], []
        for label, name in enumerate(CIFAR10_CLASSES):
            for i in range(CIFAR10_SUBSET[split]):
                with Image.open(root / split / name / f"{i:04d}.jpg") as image:
                    images.append(np.asarray(image.convert("RGB")))
                labels.append(label)
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        return (x - mean) / std, torch.tensor(labels)

    return (*load("train"), *load("test"))
