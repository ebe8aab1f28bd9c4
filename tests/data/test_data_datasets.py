"""Dataset classes on real data: ImageFolder decoding and its cache, subsets, settings, missing data and offline downloads."""
from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sigprop.data import CIFAR10, CIFAR10JPEG, MNIST, DatasetNotFoundError, Embedded, ImageFolder, stratified_indices
from sigprop.data import datasets as datasets_module
from sigprop.data.datasets import DOWNLOAD_TIMEOUT_S, channel_stats
from sigprop.data.offline import import_idx

# What the cifar_tree fixture (tests/conftest.py) holds: images per class of the real archive.
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_PER_CLASS = {"train": 20, "test": 8}


def _pil(path: Path, mode: str = "RGB") -> torch.Tensor:
    with Image.open(path) as im:
        array = np.asarray(im.convert(mode))
    return torch.from_numpy(array.reshape(*array.shape[:2], -1).copy()).permute(2, 0, 1)


def test_cifar10_jpeg_subset_decodes_like_pil_and_is_cached(cifar_tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = CIFAR10JPEG(root=cifar_tree, mean=[0.424, 0.415, 0.384], std=[0.283, 0.278, 0.284], crop_padding=4, flip=True)
    data = dataset.load()
    n_train, n_test = (len(CIFAR_CLASSES) * CIFAR_PER_CLASS[s] for s in ("train", "test"))
    assert data.train_images.shape == (n_train, 3, 32, 32) and data.test_images.shape == (n_test, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert torch.bincount(data.train_labels).tolist() == [CIFAR_PER_CLASS["train"]] * 10
    assert data.augment is not None and data.augment.crop_padding == 4 and data.augment.flip
    # Labels follow the sorted class folders, and pixels equal PIL's decoding of the same file.
    tree = cifar_tree / "cifar10-jpeg"
    files = sorted((tree / "test" / "ship").glob("*.jpg"))
    ship = CIFAR_CLASSES.index("ship")
    matches = [i for i in range(n_test) if torch.equal(data.test_images[i], _pil(files[0]))]
    assert len(matches) == 1 and data.test_labels[matches[0]].item() == ship
    # The test split is in a fixed shuffled order: any 20 consecutive test images hold several classes
    # (a folder tree lists them class by class, which would give one-class test batches).
    assert all(len(set(data.test_labels[i : i + 20].tolist())) >= 4 for i in range(0, n_test - 20, 20))

    cache = cifar_tree / ".cache"
    assert sorted(p.name for p in cache.iterdir()) == ["cifar10_jpeg-test.pt", "cifar10_jpeg-train.pt"]

    def no_decoding(*args: object) -> None:
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(ImageFolder, "_decode", no_decoding)
    again = CIFAR10JPEG(root=cifar_tree, mean=[0.424, 0.415, 0.384], std=[0.283, 0.278, 0.284]).load()
    assert torch.equal(again.train_images, data.train_images) and torch.equal(again.test_labels, data.test_labels)


def test_image_folder_cache_follows_the_files(cifar_tree: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(cifar_tree / "cifar10-jpeg", tree)
    calls = []
    original = ImageFolder._decode

    def counting(self: ImageFolder, samples: list, mode: str, size: tuple[int, int]):  # noqa: ANN202
        calls.append(len(samples))
        return original(self, samples, mode, size)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ImageFolder, "_decode", counting)
        first = ImageFolder(root=tmp_path, name="tree").load()
        ImageFolder(root=tmp_path, name="tree").load()
        assert calls == [200, 80]  # the second load came from the cache
        # One more real image in the train split makes the train cache stale, not the test cache.
        shutil.copy(tree / "test" / "cat" / sorted(p.name for p in (tree / "test" / "cat").iterdir())[0], tree / "train" / "cat" / "extra.jpg")
        grown = ImageFolder(root=tmp_path, name="tree").load()
        assert calls == [200, 80, 201]
    assert len(grown.train_labels) == len(first.train_labels) + 1
    # Without mean/std the statistics come from the training images (real CIFAR-10 pixels).
    assert first.mean == channel_stats(first.train_images)[0]
    assert all(0.35 < m < 0.6 for m in first.mean) and all(0.18 < s < 0.32 for s in first.std)
    assert first.augment is None


def test_image_folder_sizes_and_grey_images(cifar_tree: Path, tmp_path: Path) -> None:
    tree = tmp_path / "mixed"
    shutil.copytree(cifar_tree / "cifar10-jpeg", tree)
    odd = sorted((tree / "train" / "frog").glob("*.jpg"))[0]
    with Image.open(odd) as im:
        im.resize((40, 40)).save(odd)
    with pytest.raises(ValueError, match="set dataset.image_size"):
        ImageFolder(root=tmp_path, name="mixed").load()
    resized = ImageFolder(root=tmp_path, name="mixed", image_size=16).load()
    assert resized.input_shape == (3, 16, 16)

    # Real MNIST digits saved as PNG (lossless): one channel is inferred and the pixels come back exactly.
    digits = Embedded(test_subset=40).load()
    grey = tmp_path / "digits"
    for split, images, labels in (("train", digits.test_images[:30], digits.test_labels[:30]), ("test", digits.test_images[30:], digits.test_labels[30:])):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = grey / split / str(label.item())
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i:03d}.png")
    loaded = ImageFolder(root=tmp_path, name="digits").load()
    assert loaded.input_shape == (1, 28, 28)
    order = sorted(range(30), key=lambda i: (str(digits.test_labels[i].item()), f"{i:03d}"))
    assert torch.equal(loaded.train_images, digits.test_images[:30][order])


def test_stratified_subsets_of_real_labels() -> None:
    labels = Embedded().load().train_labels
    idx = stratified_indices(labels, 1000, seed=0)
    assert len(idx) == 1000 and len(set(idx.tolist())) == 1000 and torch.equal(idx, idx.sort().values)
    full, part = torch.bincount(labels).double(), torch.bincount(labels[idx]).double()
    assert ((part - full * 1000 / len(labels)).abs() < 1).all()  # every class in proportion, within rounding
    assert torch.equal(idx, stratified_indices(labels, 1000, seed=0))
    assert not torch.equal(idx, stratified_indices(labels, 1000, seed=1))

    data = Embedded(train_subset=500, test_subset=200, subset_seed=3).load()
    assert len(data.train_labels) == 500 and len(data.test_labels) == 200
    assert torch.bincount(data.test_labels, minlength=10).min() >= 15
    with pytest.raises(ValueError, match="dataset.train_subset=20000 exceeds the 10000 samples"):
        Embedded(train_subset=20_000).load()


def test_validation_split_is_held_out_of_the_training_images() -> None:
    """dataset.val_size: a stratified split of the training images (after train_subset), the same for every run."""
    full = Embedded(train_subset=1000).load()
    data = Embedded(train_subset=1000, val_size=200).load()
    assert full.val_images is None and full.val_labels is None
    assert len(data.train_labels) == 800 and len(data.val_labels) == 200 and len(data.test_labels) == 10_000
    # Disjoint, and together exactly the 1,000 training images of the run without a validation split.
    pairs = lambda images, labels: {(bytes(x.numpy()), int(y)) for x, y in zip(images, labels, strict=True)}  # noqa: E731
    train, val = pairs(data.train_images, data.train_labels), pairs(data.val_images, data.val_labels)
    assert not train & val and train | val == pairs(full.train_images, full.train_labels)
    counts = torch.bincount(data.val_labels, minlength=10).double()
    assert ((counts - torch.bincount(full.train_labels, minlength=10).double() / 5).abs() < 1).all()  # stratified
    again = Embedded(train_subset=1000, val_size=200).load()
    assert torch.equal(again.val_images, data.val_images) and torch.equal(again.train_labels, data.train_labels)
    with pytest.raises(ValueError, match="dataset.val_size=1000 leaves no training samples"):
        Embedded(train_subset=1000, val_size=1000).load()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"crop_padding": -1}, "dataset.crop_padding=-1"),
        ({"val_size": 0}, "dataset.val_size=0"),
        ({"train_subset": 0}, "dataset.train_subset=0"),
        ({"test_subset": 1.5}, "dataset.test_subset=1.5"),
        ({"mean": [0.1, 0.2], "std": [0.3, 0.3]}, "dataset.mean/std need one value per channel"),
        ({"mean": [0.1]}, "set both dataset.mean and dataset.std"),
        ({"mean": [0.1], "std": [0.0]}, "dataset.std must be positive"),
        ({"root": ""}, "dataset.root is not set"),
    ],
)
def test_bad_settings_fail_at_construction(settings: dict, message: str, tmp_path: Path) -> None:
    kwargs = {"root": tmp_path, **settings}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        MNIST(**kwargs)
    with pytest.raises(ValueError, match=r"dataset\.image_size=0"):
        ImageFolder(root=tmp_path, image_size=0)


def test_missing_data_gives_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        MNIST(root=tmp_path, download=False).load()
    message = str(err.value)
    assert "\n" not in message and err.value.__suppress_context__
    assert f"not found in {tmp_path}/MNIST/raw (download: false)" in message
    assert f"python -m sigprop.data.prepare mnist --source DIR --data-dir {tmp_path}" in message

    with pytest.raises(DatasetNotFoundError, match=f"prepare cifar10_jpeg --source cifar10-jpeg.tar.gz --data-dir {tmp_path}"):
        CIFAR10JPEG(root=tmp_path).load()
    with pytest.raises(DatasetNotFoundError, match=f"{tmp_path}/flowers/train.*prepare image_folder --source DIR_OR_TAR --name flowers"):
        ImageFolder(root=tmp_path, name="flowers").load()


@pytest.mark.parametrize("dataset", [MNIST, CIFAR10])
def test_offline_download_fails_cleanly_and_fast(dataset: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no network (simulated, so the test means the same on a machine that has one) the download
    gives the one-line error; it runs under a socket timeout, so a silent network cannot hang it."""
    timeouts = []

    def unreachable(address: tuple, *args: object, **kwargs: object) -> socket.socket:
        timeouts.append(socket.getdefaulttimeout())
        raise OSError(101, f"Network is unreachable: {address[0]}")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as err:
        dataset(root=tmp_path, download=True).load()
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert "\n" not in message and err.value.__suppress_context__
    assert "download failed" in message and str(tmp_path) in message
    # The cause, where torchvision's error holds it (its MNIST before 0.21 prints it and raises "Error downloading <file>").
    assert "Network is unreachable" in message or "RuntimeError: Error downloading" in message
    assert timeouts and set(timeouts) == {DOWNLOAD_TIMEOUT_S}
    assert socket.getdefaulttimeout() is None  # restored afterwards


def test_download_skipped_when_files_are_present(mnist_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import_idx(mnist_source, tmp_path, "MNIST")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried the network although the files are there")

    monkeypatch.setattr(socket, "create_connection", no_network)
    data = MNIST(root=tmp_path, download=True, test_subset=100).load()
    assert len(data.test_labels) == 100 and len(data.train_labels) == 60_000


def test_pil_fallback_decodes_the_same(cifar_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once torchvision drops its deprecated JPEG decoder, PIL takes over with identical pixels."""
    fast = ImageFolder(root=tmp_path / "a", path=cifar_tree / "cifar10-jpeg").load()
    monkeypatch.setattr(datasets_module, "batch_jpeg", lambda: False)
    slow = ImageFolder(root=tmp_path / "b", path=cifar_tree / "cifar10-jpeg").load()
    assert torch.equal(fast.train_images, slow.train_images) and torch.equal(fast.test_images, slow.test_images)


def test_image_folder_cache_notices_an_image_replaced_by_one_of_the_same_size(tmp_path: Path) -> None:
    """Real MNIST digits as BMP files (every 28x28 grey BMP has the same byte size): replacing one by another
    digit must not serve the cached old one."""
    data = Embedded().load()
    tree = tmp_path / "digits"
    for split, images, labels in (("train", data.train_images[:30], data.train_labels[:30]), ("test", data.test_images[:10], data.test_labels[:10])):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            (tree / split / str(int(label))).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(tree / split / str(int(label)) / f"{i:03d}.bmp")
    first = ImageFolder(root=tmp_path, name="digits", mean=[0.5], std=[0.5]).load()
    target = next((tree / "train").glob("*/*.bmp"))
    index = [Path(f) for f, _ in torchvision_samples(tree / "train")].index(target)
    assert torch.equal(first.train_images[index, 0], _pil(target, "L")[0])
    size = target.stat().st_size
    replacement = data.train_images[1000, 0]  # another real digit
    Image.fromarray(replacement.numpy()).save(target)
    assert target.stat().st_size == size and not torch.equal(replacement, first.train_images[index, 0])
    second = ImageFolder(root=tmp_path, name="digits", mean=[0.5], std=[0.5]).load()
    assert torch.equal(second.train_images[index, 0], replacement)


def torchvision_samples(folder: Path) -> list[tuple[str, int]]:
    """The files of an image folder in ImageFolder's order (the order of the loaded images)."""
    import torchvision

    return torchvision.datasets.ImageFolder(str(folder)).samples
