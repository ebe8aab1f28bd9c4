"""Offline import of real dataset copies: IDX files into torchvision's layout, image trees from folders and archives."""
from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from sigprop.data import FashionMNIST, MNIST
from sigprop.data.offline import IDX_FILES, find_image_tree, import_idx, import_image_folder, read_idx
from sigprop.data.prepare import main as prepare

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_import_idx_gives_what_torchvision_mnist_reads(mnist_source: Path, tmp_path: Path) -> None:
    raw = import_idx(mnist_source, tmp_path, "MNIST")
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES)
    train = torchvision.datasets.MNIST(str(tmp_path), train=True, download=False)
    test = torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)
    assert len(train) == 60_000 and len(test) == 10_000
    assert torch.bincount(train.targets).tolist() == MNIST_TRAIN_COUNTS
    assert torch.equal(test.data, torch.from_numpy(read_idx(mnist_source / "t10k-images-idx3-ubyte.gz").copy()))

    data = MNIST(root=tmp_path, download=False, mean=[0.1307], std=[0.3081], crop_padding=2).load()
    assert data.train_images.shape == (60_000, 1, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_labels.dtype == torch.int64 and data.num_classes == 10 and data.input_shape == (1, 28, 28)
    assert data.augment is not None and data.augment.crop_padding == 2 and not data.augment.flip
    # A second import keeps the files in place and changes nothing.
    before = (raw / "train-images-idx3-ubyte").stat().st_mtime_ns
    import_idx(mnist_source, tmp_path, "MNIST")
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == before


def test_prepare_fashion_mnist_from_the_debian_package(fashion_source: Path, tmp_path: Path) -> None:
    prepare(["fashion_mnist", "--data-dir", str(tmp_path)])  # --source defaults to the Debian package's folder
    data = FashionMNIST(root=tmp_path, download=False, mean=[0.286], std=[0.353], crop_padding=2, flip=True).load()
    assert data.train_images.shape == (60_000, 1, 28, 28) and data.test_images.shape == (10_000, 1, 28, 28)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    pixels = data.train_images.float() / 255
    assert abs(pixels.mean().item() - 0.286) < 0.001 and abs(pixels.std().item() - 0.353) < 0.001


def test_import_idx_checks_all_files_before_writing(mnist_source: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in IDX_FILES[:2]:
        shutil.copy(mnist_source / f"{name}.gz", partial)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"):
        import_idx(partial, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for name in IDX_FILES:  # labels where images belong: the header check must refuse them
        other = name.replace("images-idx3", "labels-idx1") if "images" in name else name
        shutil.copy(mnist_source / f"{other}.gz", swapped / f"{name}.gz")
    with pytest.raises(ValueError, match="not an IDX images file"):
        import_idx(swapped, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepare_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        prepare(["mnist", "--source", str(tmp_path), "--data-dir", str(tmp_path / "d")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path) in err and "train-images-idx3-ubyte" in err
    with pytest.raises(SystemExit):
        prepare(["image_folder", "--source", str(tmp_path)])  # no --name
    assert "--name NAME are required" in capsys.readouterr().err


def test_image_folder_from_a_real_archive_and_completion(cifar_tree: Path, tmp_path: Path) -> None:
    archive = tmp_path / "subset.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # wrapped in a folder, as the shipped archive is
        tar.add(cifar_tree / "cifar10-jpeg", arcname="wrapper")
    data_dir = tmp_path / "data"
    prepare(["image_folder", "--source", str(archive), "--name", "cifar_small", "--data-dir", str(data_dir)])
    dest = data_dir / "cifar_small"
    assert find_image_tree(dest) == dest
    original = sorted(p.relative_to(cifar_tree / "cifar10-jpeg") for p in (cifar_tree / "cifar10-jpeg").rglob("*.jpg"))
    assert sorted(p.relative_to(dest) for p in dest.rglob("*.jpg")) == original == sorted(original)
    assert len(original) == 280
    first = original[0]
    assert (dest / first).read_bytes() == (cifar_tree / "cifar10-jpeg" / first).read_bytes()

    # A partial copy (e.g. a test fixture's subset) is completed, not silently kept.
    shutil.rmtree(dest / "test" / "dog")
    (dest / first).unlink()
    import_image_folder(archive, data_dir, "cifar_small")
    assert sorted(p.relative_to(dest) for p in dest.rglob("*.jpg")) == original
    assert not [p for p in data_dir.iterdir() if p.name.startswith(".")], "staging folder left behind"

    # From a folder: the same tree.
    import_image_folder(cifar_tree, tmp_path / "copy", "c")
    assert sorted(p.relative_to(tmp_path / "copy" / "c") for p in (tmp_path / "copy" / "c").rglob("*.jpg")) == original


def test_image_folder_rejects_a_tree_without_test(cifar_tree: Path, tmp_path: Path) -> None:
    only_train = tmp_path / "only_train"
    shutil.copytree(cifar_tree / "cifar10-jpeg" / "train", only_train / "train")
    with pytest.raises(ValueError, match=f"{only_train}: expected one folder with train/<class>/<images> and test"):
        import_image_folder(only_train, tmp_path / "data", "x")
    assert not (tmp_path / "data" / "x").exists()


def test_read_idx_shapes(mnist_source: Path) -> None:
    labels = read_idx(mnist_source / "train-labels-idx1-ubyte.gz")
    images = read_idx(mnist_source / "t10k-images-idx3-ubyte.gz")
    assert labels.shape == (60_000,) and images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == MNIST_TRAIN_COUNTS


def _copy_source(mnist_source: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in IDX_FILES:
        shutil.copy(mnist_source / f"{name}.gz", folder)
    return folder


def _prepare_error(source: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        prepare(["mnist", "--source", str(source), "--data-dir", str(data_dir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_prepare_mnist_names_a_bad_file_and_leaves_nothing_behind(
    mnist_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated plain or gzip file, a bad CRC, labels that do not match the images: refused in one line that
    names the file, before anything is moved into place; no .part file or staging folder is left."""
    images = "train-images-idx3-ubyte"
    plain = gzip.decompress((mnist_source / f"{images}.gz").read_bytes())
    compressed = (mnist_source / f"{images}.gz").read_bytes()
    labels = gzip.decompress((mnist_source / "train-labels-idx1-ubyte.gz").read_bytes())
    crc_broken = compressed[:-8] + bytes([compressed[-8] ^ 0xFF]) + compressed[-7:]  # the gzip trailer's CRC-32
    short_labels = labels[:4] + (59_999).to_bytes(4, "big") + labels[8:-1]  # a valid IDX file of 59,999 labels
    cases = {
        "truncated plain": (f"{images}", plain[: len(plain) // 2], "is truncated: its header says (60000, 28, 28)"),
        "truncated gzip": (f"{images}.gz", compressed[: len(compressed) // 2], "is truncated (its gzip stream ends early)"),
        "bad CRC": (f"{images}.gz", crc_broken, "is corrupt (CRC check failed"),
        "labels for other images": ("train-labels-idx1-ubyte.gz", gzip.compress(short_labels), "has 59,999 labels for the 60,000 images"),
    }
    for case, (name, data, message) in cases.items():
        source = _copy_source(mnist_source, tmp_path / case.replace(" ", "_"))
        (source / f"{images}.gz").unlink() if name == images else None
        (source / name).write_bytes(data)
        data_dir = tmp_path / f"data_{case.replace(' ', '_')}"
        err = _prepare_error(source, data_dir, capsys)
        assert message in err and str(source / name) in err, (case, err)
        assert not data_dir.exists(), case  # nothing was written, not even a staging folder


def test_prepare_mnist_replaces_an_invalid_copy(mnist_source: Path, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    good = gzip.decompress((mnist_source / "train-images-idx3-ubyte.gz").read_bytes())
    (raw / "train-images-idx3-ubyte").write_bytes(good[:1000])  # an earlier, cut copy
    (raw / "train-images-idx3-ubyte.part").write_bytes(b"left by a killed import")
    prepare(["mnist", "--source", str(mnist_source), "--data-dir", str(tmp_path)])
    assert (raw / "train-images-idx3-ubyte").read_bytes() == good
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES)  # no .part, no staging folder
    assert len(torchvision.datasets.MNIST(str(tmp_path), train=True, download=False)) == 60_000


def test_image_files_are_those_torchvision_reads_and_settings_are_checked_without_torchvision() -> None:
    """The folder import takes the files ImageFolder reads; the app's modules import torchvision only when a
    dataset reads with it, so a run refused for its settings answers without waiting for it (about a second)."""
    import subprocess
    import sys

    from torchvision.datasets.folder import IMG_EXTENSIONS

    from sigprop.data.offline import IMAGE_EXTENSIONS

    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS
    engine = ("assemble", "checkpoint", "checks", "config", "interrupt", "outcome", "parallel", "parts", "pipeline",
              "rundir", "step", "summary", "sweeps")  # what train.py imports
    modules = ", ".join(["sigprop.data", "sigprop.tracking", *(f"sigprop.engine.{m}" for m in engine)])
    probe = f"import sys, {modules}; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
