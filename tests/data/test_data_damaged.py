"""The readers check what they read and name the file at fault in one line: .npz files of the embedded format,
MNIST IDX files and tar archives for prepare (the app's side: tests/app/test_app_data_errors.py). Real files
cut or changed from the real datasets."""
from __future__ import annotations

import gzip
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torchvision

from sigprop.data import Embedded
from sigprop.data.datasets import embedded_path
from sigprop.data.offline import IDX_FILES
from sigprop.data.prepare import main as prepare


def shipped() -> dict[str, np.ndarray]:
    with np.load(embedded_path()) as npz:
        return {k: npz[k] for k in npz.files}


def test_embedded_format_files_are_checked_and_named(tmp_path: Path) -> None:
    good = shipped()
    raw = embedded_path().read_bytes()
    labels = good["train_labels"].copy()
    labels[5] = 12
    files = {
        "truncated": (raw[: len(raw) // 2], "not a readable dataset of the embedded format (truncated or corrupt"),
        "empty": (b"", "not a readable dataset of the embedded format (not a .npz archive)"),
        "missing an array": ({k: v for k, v in good.items() if k != "test_labels"}, "no test_labels array"),
        "float images": ({**good, "train_images": good["train_images"].astype(np.float32)}, "(train_images): images are float32"),
        "a label beyond the classes": ({**good, "train_labels": labels}, "(train_labels): label 12 (sample 5) is not one of the 10 classes"),
        "images without pixels": ({**good, "test_images": np.zeros((10_000, 1, 0, 0), np.uint8)}, "(test_images): 10,000 images of shape (1, 0, 0)"),
        "5 labels missing": ({**good, "train_labels": good["train_labels"][:-5]}, "(train_labels): 9,995 labels for 10,000 images"),
        "float labels": ({**good, "test_labels": good["test_labels"].astype(np.float64)}, "(test_labels): labels are float64"),
    }
    for case, (content, message) in files.items():
        path = tmp_path / f"{case.replace(' ', '_')}.npz"
        path.write_bytes(content) if isinstance(content, bytes) else np.savez(path, **content)
        with pytest.raises(ValueError) as err:
            Embedded(file=str(path)).load()
        text = str(err.value)
        assert text.startswith(str(path)) and message in text and "\n" not in text, (case, text)


def idx_bytes(source: Path, name: str) -> bytes:
    return gzip.decompress((source / f"{name}.gz").read_bytes())


def prepare_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        prepare(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_prepare_mnist_refuses_labels_beyond_the_classes(mnist_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "source"
    shutil.copytree(mnist_source, source)
    labels = bytearray(idx_bytes(source, "t10k-labels-idx1-ubyte"))
    labels[8 + 7] = 10
    (source / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    err = prepare_error(["mnist", "--source", str(source), "--data-dir", str(tmp_path / "data")], capsys)
    assert err == f"prepare mnist: {source / 't10k-labels-idx1-ubyte.gz'} holds label 10 (sample 7); labels must be 0 to 9: download it again"
    assert not (tmp_path / "data").exists()


def test_prepare_mnist_replaces_a_split_whose_files_disagree(mnist_source: Path, tmp_path: Path) -> None:
    """A label file in place with a valid header of 9,999 labels, beside 10,000 images: both files of that
    split are replaced from the source; the other split's valid files are kept."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        (raw / name).write_bytes(idx_bytes(mnist_source, name))
    labels = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(labels[:4] + (9_999).to_bytes(4, "big") + labels[8:-1])
    kept = (raw / "train-labels-idx1-ubyte").stat().st_mtime_ns
    prepare(["mnist", "--source", str(mnist_source), "--data-dir", str(tmp_path)])
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == labels
    assert (raw / "train-labels-idx1-ubyte").stat().st_mtime_ns == kept
    assert len(torchvision.datasets.MNIST(str(tmp_path), train=False, download=False)) == 10_000


def test_prepare_refuses_a_truncated_archive(cifar_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_tree / "cifar10-jpeg", arcname="cifar10-jpeg")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    for args, dest in (
        (["image_folder", "--name", "tree"], tmp_path / "data" / "tree"),
        (["cifar10_jpeg"], tmp_path / "data" / "cifar10-jpeg"),
    ):
        err = prepare_error([*args, "--source", str(cut), "--data-dir", str(tmp_path / "data")], capsys)
        assert err.startswith(f"prepare {args[0]}: {cut} is truncated or corrupt (") and err.endswith(f"nothing was written to {dest}"), err
        assert not dest.exists()
