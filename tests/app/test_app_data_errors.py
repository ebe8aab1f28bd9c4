"""A run stops in one line naming the file when its data is damaged: MNIST labels beyond the classes (files put
in place without prepare), a decompression bomb or a truncated JPEG in an image folder. Real images and IDX
files from the real datasets, changed; real processes of train.py."""
from __future__ import annotations

import gzip
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from app_helpers import TINY, train

from sigprop.data import ImageFolder
from sigprop.data.offline import IDX_FILES


def test_training_refuses_mnist_labels_beyond_the_classes(mnist_source: Path, tmp_path: Path) -> None:
    """MNIST files put in place without prepare: the run stops in one line naming the label file."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        (raw / name).write_bytes(gzip.decompress((mnist_source / f"{name}.gz").read_bytes()))
    labels = bytearray((raw / "train-labels-idx1-ubyte").read_bytes())
    labels[8 + 100] = 12  # sample 100
    (raw / "train-labels-idx1-ubyte").write_bytes(labels)
    result = train([*TINY, "dataset=mnist", f"data_dir={tmp_path / 'data'}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == f"error: {raw / 'train-labels-idx1-ubyte'}: label 12 (sample 100) is not one of the 10 classes (0 to 9)"
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    # The folder Hydra created says how the run ended: summary.json and the same line at the end of train.log.
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary == {"status": "failed", "last_epoch": 0, "world_size": 1, "reason": line.removeprefix("error: ")}
    assert (tmp_path / "run" / "train.log").read_text().rstrip().endswith(f"[train][ERROR] - {line}")


def png_bomb(path: Path, side: int) -> None:
    """A real grey PNG of ``side`` x ``side`` zero pixels: under a megabyte on disk, ``side**2`` bytes decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), bytes(side + 1)  # each row: filter byte 0, then the pixels
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def small_tree(cifar_tree: Path, dest: Path) -> Path:
    """Two classes of the real JPEG tree, 3 training and 2 test images each."""
    for split, count in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            (dest / split / name).mkdir(parents=True)
            for i in range(count):
                shutil.copyfile(cifar_tree / "cifar10-jpeg" / split / name / f"{i:04d}.jpg", dest / split / name / f"{i:04d}.jpg")
    return dest


def test_image_folder_names_an_image_it_cannot_decode(cifar_tree: Path, tmp_path: Path) -> None:
    # A decompression bomb (more pixels than PIL allows: Image.MAX_IMAGE_PIXELS twice over) among the images.
    tree = small_tree(cifar_tree, tmp_path / "bomb")
    png_bomb(tree / "train" / "dog" / "0009.png", 13_500)
    with pytest.raises(ValueError, match=rf"^{tree / 'train' / 'dog' / '0009.png'}: cannot decode the image \(DecompressionBombError: "):
        ImageFolder(root=tmp_path / "data", path=tree).load()
    # A truncated JPEG, the first image (read alone, for the tree's mode and size).
    tree = small_tree(cifar_tree, tmp_path / "truncated")
    first = tree / "train" / "cat" / "0000.jpg"
    first.write_bytes(first.read_bytes()[:300])
    with pytest.raises(ValueError, match=rf"^{first}: cannot decode the image \(OSError: "):
        ImageFolder(root=tmp_path / "data", path=tree).load()


def test_training_names_a_decompression_bomb_in_one_line(cifar_tree: Path, tmp_path: Path) -> None:
    tree = small_tree(cifar_tree, tmp_path / "tree")
    bomb = tree / "test" / "cat" / "0009.png"
    png_bomb(bomb, 13_500)
    args = ["dataset=image_folder", f"dataset.path={tree}", f"data_dir={tmp_path / 'data'}", "model.num_hidden=16",
            "batch_size=2", "test_batch_size=2", "epochs=1", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"]
    result = train(args, tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bomb}: cannot decode the image (DecompressionBombError: Image size (182250000 pixels)"), line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
