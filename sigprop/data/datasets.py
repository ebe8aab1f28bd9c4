"""Datasets for the training application, each loaded whole as ``uint8`` tensors.

``conf/dataset/*.yaml`` instantiates one of the classes here; ``load()`` returns an
:class:`ImageData` that :class:`~sigprop.data.loader.TensorLoader` batches on the device.
Torchvision's own classes read (and, when online, download) the standard datasets;
:class:`ImageFolder` reads any ``train/``/``test/`` tree of images; :class:`Embedded`
reads the MNIST subset shipped inside the package, so a fresh offline machine can train.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import os
import socket
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..utils import one_line
from .loader import Augment
from .offline import CIFAR10_JPEG_FOLDER, FASHION_MNIST_DEBIAN, IDX_FILES, IMAGE_EXTENSIONS, SPLITS

log = logging.getLogger(__name__)

EMBEDDED_FILE = "mnist_small.npz"
EMBEDDED_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")  # what the .npz holds
# torchvision's urlopen has no timeout: a network that drops packets (instead of refusing)
# would hang a download forever, so downloads run under this socket timeout.
DOWNLOAD_TIMEOUT_S = 30.0
CACHE_VERSION = 2  # 2: files are keyed by modification time (ns) and size
DECODE_CHUNK = 512  # images per decoding task
# torchvision is imported by the datasets that read with it: its import takes about a second (it loads
# torch's compiler), which a run on the embedded subset, or one refused for its settings, need not wait.


def batch_jpeg() -> bool:
    """Whether torchvision decodes JPEGs in batches (about twice as fast as PIL on small images; deprecated since
    torchvision 0.29, so it may go)."""
    import torchvision

    return hasattr(torchvision.io, "decode_jpeg") and hasattr(torchvision.io, "read_file")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing and could not be downloaded; the message says where they must go."""


@dataclass
class ImageData:
    """A whole dataset in memory: ``uint8`` images ``(N, C, H, W)``, ``int64`` labels, normalisation, augmentation.

    ``val_images``/``val_labels``: the validation split held out from the training images
    (``dataset.val_size``), or ``None``.
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment | None
    val_images: Tensor | None = None
    val_labels: Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)


def stratified_indices(labels: Tensor | np.ndarray, n: int, seed: int = 0) -> Tensor:
    """Sorted indices of ``n`` samples with every class in the proportion it has in ``labels``.

    Per-class quotas use the largest-remainder rule, so they sum to exactly ``n``; which samples
    of a class are taken comes from numpy's legacy ``RandomState(seed)``, whose stream never
    changes between versions (the shipped embedded subset must rebuild identically).
    """
    y = np.asarray(labels).astype(np.int64)
    if not 0 < n <= len(y):
        raise ValueError(f"subset size {n} must be between 1 and the {len(y)} samples available")
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * n / len(y)
    quotas = np.floor(exact).astype(np.int64)
    # Ties in the remainder go to the smaller class index (stable sort), so the result is deterministic.
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[: n - int(quotas.sum())]] += 1
    rng = np.random.RandomState(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quotas, strict=True)]
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``uint8`` images scaled to [0, 1], rounded to 4 digits."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        # A 256-bin histogram gives the exact moments without a float copy of the images.
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).to(torch.float64)
        hist /= hist.sum()
        mean = float((hist * levels).sum())
        means.append(round(mean, 4))
        stds.append(round(max(float((hist * levels**2).sum()) - mean**2, 0.0) ** 0.5, 4))
    return tuple(means), tuple(stds)


def check_split(images: Tensor, labels: Tensor, num_classes: int, where: Callable[[str], str]) -> Tensor:
    """Check one split as a reader gave it: ``uint8`` images ``(N, C, H, W)`` of at least one sample and pixel,
    one integer label per image, each one of the ``num_classes`` classes. Returns the labels as ``int64``;
    raises ``ValueError`` naming the file (``where("images")`` or ``where("labels")``) at fault."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        what = f"{_dtype(images)} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{where('images')}: images are {what}; expected uint8 pixels (N, C, H, W)")
    if images.shape[0] == 0 or 0 in images.shape[1:]:
        raise ValueError(f"{where('images')}: {images.shape[0]:,} images of shape {tuple(images.shape[1:])}: no pixels to train on")
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        what = f"{_dtype(labels)} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{where('labels')}: labels are {what}; expected one integer class index per image")
    if len(labels) != len(images):
        raise ValueError(f"{where('labels')}: {len(labels):,} labels for {len(images):,} images")
    labels = labels.long()
    outside = (labels < 0) | (labels >= num_classes)
    if bool(outside.any()):
        first = int(outside.nonzero()[0])
        raise ValueError(
            f"{where('labels')}: label {int(labels[first])} (sample {first:,}) is not one of the {num_classes} classes (0 to {num_classes - 1})"
        )
    return labels


def _dtype(x: Tensor) -> str:
    return str(x.dtype).removeprefix("torch.")


def _floats(value: float | Sequence[float] | None, setting: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (float(value),)
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"dataset.{setting}={value!r}: give a list of numbers, one per channel, or null") from None
    if not values:
        raise ValueError(f"dataset.{setting} is empty: give one value per channel or null")
    return values


def _count(value: int | None, setting: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"dataset.{setting}={value!r}: must be a positive integer or null")
    return value


def _path(value: str | os.PathLike[str], setting: str) -> Path:
    if value is None or str(value) == "":
        raise ValueError(f"dataset.{setting} is not set: give a folder (relative paths start at the working directory)")
    # Hydra does not change the working directory, so relative paths mean "from where train.py was started".
    return Path(value).expanduser().absolute()


class Dataset:
    """Base of the dataset configs: normalisation, augmentation and subset settings shared by every dataset.

    Args:
        name: what runs and logs call the dataset.
        mean, std: per-channel normalisation of pixels in [0, 1]; ``None`` computes them from the training images.
        crop_padding: random crop after zero padding by this many pixels (0: off).
        flip: random horizontal flip.
        cutout_patches: number of cutout squares per training image (0: off).
        cutout_length: side of a cutout square in pixels.
        train_subset, test_subset: keep a stratified, seeded subset of this many samples (``None``: all).
        val_size: hold out a stratified, seeded validation split of this many training samples (after
            ``train_subset``); the rest trains (``None``: no validation split).
        subset_seed: seed of the subsets and the validation split (separate from the run's seed, so
            runs of every seed compare on the same samples).
    """

    channels: int | None = None  # known channel count, checked against mean/std before loading
    image_shape: tuple[int, int] | None = None  # known (height, width), checked against the augmentation before loading

    def __init__(
        self,
        name: str,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        crop_padding: int = 0,
        flip: bool = False,
        cutout_patches: int = 0,
        cutout_length: int = 16,
        train_subset: int | None = None,
        test_subset: int | None = None,
        subset_seed: int = 0,
        val_size: int | None = None,
    ) -> None:
        self.name = str(name)
        self.mean, self.std = _floats(mean, "mean"), _floats(std, "std")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"dataset {self.name}: set both dataset.mean and dataset.std, or neither")
        if self.mean is not None and self.std is not None:
            if len(self.mean) != len(self.std):
                raise ValueError(f"dataset {self.name}: dataset.mean has {len(self.mean)} values, dataset.std {len(self.std)}")
            if self.channels is not None and len(self.mean) not in (1, self.channels):
                raise ValueError(f"dataset {self.name}: dataset.mean/std need one value per channel ({self.channels}), got {len(self.mean)}")
            if min(self.std) <= 0:
                raise ValueError(f"dataset {self.name}: dataset.std must be positive, got {self.std}")
        for setting, value in (("crop_padding", crop_padding), ("cutout_patches", cutout_patches), ("cutout_length", cutout_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"dataset.{setting}={value!r}: must be a non-negative integer")
        self.augment_settings = Augment(crop_padding=crop_padding, flip=bool(flip), cutout_patches=cutout_patches, cutout_length=cutout_length)
        shape = self.known_shape()
        if shape is not None:
            self._check_augment(*shape)
        self.train_subset = _count(train_subset, "train_subset")
        self.test_subset = _count(test_subset, "test_subset")
        self.val_size = _count(val_size, "val_size")
        self.subset_seed = int(subset_seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    def known_shape(self) -> tuple[int, int] | None:
        """The images' ``(height, width)`` when it is known before reading them."""
        return self.image_shape

    def _check_augment(self, height: int, width: int) -> None:
        """The augmentation's sizes against the images': a crop padding that can move the crop off the image,
        or cutout squares larger than it."""
        a, where = self.augment_settings, f"dataset {self.name}'s images are {height}x{width}"
        if a.crop_padding >= min(height, width):
            raise ValueError(f"dataset.crop_padding={a.crop_padding}: must be from 0 to {min(height, width) - 1} ({where})")
        if a.cutout_length > max(height, width):
            raise ValueError(f"dataset.cutout_length={a.cutout_length}: must be from 0 to {max(height, width)} ({where})")

    def read(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """``(train_images, train_labels, test_images, test_labels, num_classes)``, all samples (checked by
        ``load`` with ``check_split``)."""
        raise NotImplementedError

    def source(self, split: str, kind: str) -> str:
        """Where the ``kind`` (``images`` or ``labels``) of ``split`` is read from, for error messages."""
        return f"dataset {self.name} ({split} {kind})"

    def load(self) -> ImageData:
        """Read the dataset, apply the subsets and return it with its normalisation and augmentation.

        Raises :class:`DatasetNotFoundError` (one line: dataset, folder, files and the command that
        puts them there) when the files are missing and cannot be downloaded.
        """
        train_x, train_y, test_x, test_y, num_classes = self.read()
        train_y = check_split(train_x, train_y, num_classes, lambda kind: self.source("train", kind))
        test_y = check_split(test_x, test_y, num_classes, lambda kind: self.source("test", kind))
        if test_x.shape[1:] != train_x.shape[1:]:
            raise ValueError(
                f"{self.source('test', 'images')}: test images of shape {tuple(test_x.shape[1:])}, "
                f"training images {tuple(train_x.shape[1:])}: both splits need one shape"
            )
        self._check_augment(*train_x.shape[2:])
        channels = train_x.shape[1]
        if self.mean is None or self.std is None:
            mean, std = channel_stats(train_x)
            log.info("%s: mean %s, std %s computed from %d training images", self.name, mean, std, len(train_x))
        else:
            mean, std = self.mean, self.std
            if len(mean) == 1 and channels > 1:
                mean, std = mean * channels, std * channels
            if len(mean) != channels:
                raise ValueError(f"dataset {self.name}: dataset.mean/std have {len(mean)} values for {channels}-channel images")
        train_x, train_y = self._subset(train_x, train_y, self.train_subset, "train_subset")
        test_x, test_y = self._subset(test_x, test_y, self.test_subset, "test_subset")
        val_x, val_y = None, None
        if self.val_size is not None:
            train_x, train_y, val_x, val_y = self._hold_out(train_x, train_y, self.val_size)
        a = self.augment_settings
        active = a.crop_padding > 0 or a.flip or (a.cutout_patches > 0 and a.cutout_length > 0)
        data = ImageData(
            name=self.name,
            train_images=train_x.contiguous(),
            train_labels=train_y.long(),
            test_images=test_x.contiguous(),
            test_labels=test_y.long(),
            num_classes=int(num_classes),
            mean=tuple(mean),
            std=tuple(std),
            augment=Augment(a.crop_padding, a.flip, a.cutout_patches, a.cutout_length) if active else None,
            val_images=val_x.contiguous() if val_x is not None else None,
            val_labels=val_y.long() if val_y is not None else None,
        )
        log.debug(  # train.py's start line says it too
            "%s: %d train / %d test images of shape %s, %d classes",
            self.name, len(data.train_labels), len(data.test_labels), data.input_shape, data.num_classes,
        )
        return data

    def _subset(self, images: Tensor, labels: Tensor, size: int | None, setting: str) -> tuple[Tensor, Tensor]:
        if size is None:
            return images, labels
        if size > len(labels):
            raise ValueError(f"dataset.{setting}={size} exceeds the {len(labels)} samples of {self.name}")
        idx = stratified_indices(labels, size, self.subset_seed)
        return images[idx], labels[idx]

    def _hold_out(self, images: Tensor, labels: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(train_images, train_labels, val_images, val_labels)``: a stratified split of ``size`` samples held out."""
        if size >= len(labels):
            raise ValueError(f"dataset.val_size={size} leaves no training samples of the {len(labels)} of {self.name}")
        held = stratified_indices(labels, size, self.subset_seed)
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[held] = False
        return images[keep], labels[keep], images[held], labels[held]


class Embedded(Dataset):
    """The MNIST subset shipped inside the package (``sigprop/data/embedded/``): trains offline with no setup.

    Built by ``python -m sigprop.data.embedded`` from the full MNIST files.
    """

    channels = 1
    image_shape = (28, 28)

    def __init__(self, name: str = "embedded", file: str = EMBEDDED_FILE, **settings: Any) -> None:
        super().__init__(name=name, **settings)
        self.file = str(file)
        if not embedded_path(self.file).is_file():
            raise ValueError(f"dataset.file={self.file!r}: no such file in the package's sigprop/data/embedded/")

    def read(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        path = embedded_path(self.file)
        try:
            with path.open("rb") as f:
                if f.read(4) != b"PK\x03\x04":
                    raise ValueError("not a .npz archive")
                f.seek(0)
                with np.load(f, allow_pickle=False) as npz:
                    missing = [k for k in EMBEDDED_ARRAYS if k not in npz.files]
                    if missing:
                        raise ValueError(f"no {', '.join(missing)} array; it holds {', '.join(npz.files) or 'none'}")
                    arrays = {k: torch.from_numpy(np.array(npz[k])) for k in EMBEDDED_ARRAYS}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
            damaged = "truncated or corrupt: " if isinstance(err, (EOFError, zipfile.BadZipFile, zlib.error)) else ""
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(f"{path}: not a readable dataset of the embedded format ({damaged}{reason})") from None
        return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], 10

    def source(self, split: str, kind: str) -> str:
        return f"{embedded_path(self.file)} ({split}_{kind})"


def embedded_path(file: str = EMBEDDED_FILE) -> importlib.resources.abc.Traversable:
    """Where the shipped subset ``file`` is, wherever the package is installed."""
    return importlib.resources.files("sigprop.data").joinpath("embedded", file)


@contextmanager
def _download_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


class TorchvisionDataset(Dataset):
    """A dataset read by torchvision's own class from ``root`` in torchvision's layout, downloaded there if allowed.

    Args:
        root: the data folder (``data_dir``); relative paths start at the working directory.
        download: let torchvision download the files when they are missing.
        **settings: see :class:`Dataset`.
    """

    key: str = ""  # the config name, also the default ``name``
    num_classes: int = 10
    # For the missing-data error: the folder torchvision reads (relative to root) and what puts the
    # files there; "{root}" in ``remedy`` becomes the data folder.
    location: str = ""
    remedy: str = ""

    def __init__(self, root: str | os.PathLike[str], download: bool = True, name: str | None = None, **settings: Any) -> None:
        super().__init__(name=name or self.key, **settings)
        self.root = _path(root, "root")
        self.download = bool(download)

    def open(self, split: str, download: bool) -> Any:
        """The torchvision dataset object of one split (``train``, ``test``, or another the class knows)."""
        raise NotImplementedError

    @staticmethod
    def tensors(ds: Any) -> tuple[Tensor, Tensor]:
        """``uint8 (N, C, H, W)`` images and labels out of a torchvision dataset object."""
        raise NotImplementedError

    def missing(self, reason: str) -> DatasetNotFoundError:
        """The one-line error for files that are absent and could not be downloaded."""
        where = self.root / self.location if self.location else self.root
        return DatasetNotFoundError(f"dataset {self.name}: not found in {where} ({reason}); {self.remedy.format(root=self.root)}")

    def _open_split(self, split: str) -> Any:
        try:
            return self.open(split, download=False)
        except RuntimeError:  # torchvision: "Dataset not found or corrupted"
            if not self.download:
                raise self.missing("download: false") from None
        log.info("%s: downloading to %s", self.name, self.root)
        try:
            with _download_timeout(DOWNLOAD_TIMEOUT_S):
                return self.open(split, download=True)
        except (OSError, RuntimeError, ValueError) as err:  # URLError, socket timeouts, checksum mismatches
            raise self.missing(f"download failed: {one_line(err, kind=True, limit=240)}") from None

    def read(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        train_x, train_y = self.tensors(self._open_split("train"))
        test_x, test_y = self.tensors(self._open_split("test"))
        return train_x, train_y, test_x, test_y, self.num_classes

    def source(self, split: str, kind: str) -> str:
        return f"{self.root / self.location if self.location else self.root} ({split} {kind})"


_IDX_LIST = ", ".join(IDX_FILES)


class MNIST(TorchvisionDataset):
    """MNIST handwritten digits (28x28 grey), read by ``torchvision.datasets.MNIST``."""

    key = "mnist"
    channels = 1
    image_shape = (28, 28)
    location = "MNIST/raw"
    remedy = f"put {_IDX_LIST} (.gz or plain) in a folder DIR and run: python -m sigprop.data.prepare mnist --source DIR --data-dir {{root}}"

    def open(self, split: str, download: bool) -> Any:
        import torchvision

        return torchvision.datasets.MNIST(str(self.root), train=split == "train", download=download)

    def source(self, split: str, kind: str) -> str:
        prefix = "train" if split == "train" else "t10k"
        return str(self.root / self.location / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte")

    @staticmethod
    def tensors(ds: Any) -> tuple[Tensor, Tensor]:
        return ds.data.unsqueeze(1), ds.targets


class FashionMNIST(MNIST):
    """Fashion-MNIST clothing images (28x28 grey), read by ``torchvision.datasets.FashionMNIST``."""

    key = "fashion_mnist"
    location = "FashionMNIST/raw"
    remedy = (
        f"apt-get install dataset-fashion-mnist (puts the IDX files in {FASHION_MNIST_DEBIAN}) and run: "
        f"python -m sigprop.data.prepare fashion_mnist --data-dir {{root}} (or --source DIR for another folder with {_IDX_LIST})"
    )

    def open(self, split: str, download: bool) -> Any:
        import torchvision

        return torchvision.datasets.FashionMNIST(str(self.root), train=split == "train", download=download)


class CIFAR10(TorchvisionDataset):
    """CIFAR-10 (32x32 colour, 10 classes), read by ``torchvision.datasets.CIFAR10`` from the python archive."""

    key = "cifar10"
    channels = 3
    image_shape = (32, 32)
    location = "cifar-10-batches-py"
    remedy = (
        "put cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) in {root} (download: true extracts it), "
        "or use the JPEG copy: python -m sigprop.data.prepare cifar10_jpeg --source cifar10-jpeg.tar.gz --data-dir {root} "
        "and dataset=cifar10_jpeg"
    )

    def open(self, split: str, download: bool) -> Any:
        import torchvision

        return torchvision.datasets.CIFAR10(str(self.root), train=split == "train", download=download)

    @staticmethod
    def tensors(ds: Any) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2), torch.tensor(ds.targets)


class CIFAR100(CIFAR10):
    """CIFAR-100 (32x32 colour, 100 fine classes), read by ``torchvision.datasets.CIFAR100``."""

    key = "cifar100"
    num_classes = 100
    location = "cifar-100-python"
    remedy = "put cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) in {root} (download: true extracts it)"

    def open(self, split: str, download: bool) -> Any:
        import torchvision

        return torchvision.datasets.CIFAR100(str(self.root), train=split == "train", download=download)


class SVHN(TorchvisionDataset):
    """Street View House Numbers (32x32 colour), read by ``torchvision.datasets.SVHN``; needs scipy.

    Args:
        extra: append the 531k ``extra`` images to the training split.
    """

    key = "svhn"
    channels = 3
    image_shape = (32, 32)
    remedy = "put train_32x32.mat and test_32x32.mat (extra_32x32.mat with extra: true) from http://ufldl.stanford.edu/housenumbers/ in {root}"

    def __init__(self, root: str | os.PathLike[str], download: bool = True, name: str | None = None, extra: bool = False, **settings: Any) -> None:
        super().__init__(root, download, name, **settings)
        self.extra = bool(extra)

    def open(self, split: str, download: bool) -> Any:
        import torchvision

        return torchvision.datasets.SVHN(str(self.root), split=split, download=download)

    @staticmethod
    def tensors(ds: Any) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64))

    def read(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        if importlib.util.find_spec("scipy") is None:
            raise ModuleNotFoundError(f"dataset {self.name}: torchvision reads SVHN's .mat files with scipy: pip install scipy")
        train_x, train_y, test_x, test_y, classes = super().read()
        if self.extra:
            extra_x, extra_y = self.tensors(self._open_split("extra"))
            train_x, train_y = torch.cat([train_x, extra_x]), torch.cat([train_y, extra_y])
        return train_x, train_y, test_x, test_y, classes


class STL10(TorchvisionDataset):
    """STL-10 labelled splits (96x96 colour, 10 classes), read by ``torchvision.datasets.STL10``."""

    key = "stl10"
    channels = 3
    image_shape = (96, 96)
    location = "stl10_binary"
    remedy = "put stl10_binary.tar.gz (https://cs.stanford.edu/~acoates/stl10/) in {root} (download: true extracts it)"

    def open(self, split: str, download: bool) -> Any:
        import torchvision

        return torchvision.datasets.STL10(str(self.root), split=split, download=download)

    @staticmethod
    def tensors(ds: Any) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(ds.data), torch.from_numpy(ds.labels.astype(np.int64))


@contextmanager
def _open_image(file: str) -> Iterator[Image.Image]:
    """``PIL.Image.open(file)``; a file PIL cannot read or decode, or one with more pixels than PIL allows
    (a decompression bomb: ``Image.MAX_IMAGE_PIXELS``), is a ``ValueError`` naming it."""
    try:
        with Image.open(file) as image:
            yield image
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:  # SyntaxError: PIL's word for a broken header
        raise ValueError(f"{file}: cannot decode the image ({one_line(err, kind=True, limit=240)})") from None


def _mode(image: Image.Image) -> str:
    return "L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"


class ImageFolder(Dataset):
    """Any tree ``<path>/train/<class>/*`` + ``<path>/test/<class>/*`` of images, via ``torchvision.datasets.ImageFolder``.

    Images are decoded once (in a thread pool) and cached as tensors in ``<root>/.cache/<name>-<split>.pt``;
    the cache is rebuilt when the files, ``image_size`` or channels change. Channels follow the
    first training image (grey -> 1, otherwise RGB).

    Args:
        root: the data folder (``data_dir``), also where the cache goes.
        name: the dataset's name; the tree is ``<root>/<name>`` unless ``path`` is given.
        path: the tree's folder (relative paths start at the working directory).
        image_size: resize every image to this ``size`` or ``[height, width]``; ``None`` requires equal sizes.
        workers: decoding threads (``None``: one per CPU core).
        **settings: see :class:`Dataset`; ``mean``/``std`` default to the training images' statistics.
    """

    expected_sizes: tuple[int, int] | None = None  # (train, test) images of the complete dataset, when known

    def __init__(
        self,
        root: str | os.PathLike[str],
        name: str = "image_folder",
        path: str | os.PathLike[str] | None = None,
        image_size: int | Sequence[int] | None = None,
        workers: int | None = None,
        **settings: Any,
    ) -> None:
        self.image_size = self._size(image_size)  # before the base class checks the augmentation against it
        super().__init__(name=name, **settings)
        self.root = _path(root, "root")
        self.path = _path(path, "path") if path is not None else self.root / self.folder
        self.workers = _count(workers, "workers") or os.cpu_count() or 1

    @property
    def folder(self) -> str:
        """The tree's folder name under ``root`` when no ``path`` is given."""
        return self.name

    def known_shape(self) -> tuple[int, int] | None:
        return self.image_size or self.image_shape

    def prepare_command(self) -> str:
        """The command that puts the tree in place, for the missing-data error."""
        return f"python -m sigprop.data.prepare image_folder --source DIR_OR_TAR --name {self.folder} --data-dir {self.root}"

    @staticmethod
    def _size(value: int | Sequence[int] | None) -> tuple[int, int] | None:
        if value is None:
            return None
        size = (value, value) if isinstance(value, int) else tuple(value)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
            raise ValueError(f"dataset.image_size={value!r}: must be a positive integer, [height, width] or null")
        return int(size[0]), int(size[1])

    def read(self) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        missing = [s for s in SPLITS if not (self.path / s).is_dir()]
        if missing:
            raise DatasetNotFoundError(
                f"dataset {self.name}: {', '.join(str(self.path / s) for s in missing)} not found; "
                f"the images must be in {self.path}/{{train,test}}/<class>/, put there by: {self.prepare_command()}"
            )
        import torchvision

        try:
            train = torchvision.datasets.ImageFolder(str(self.path / "train"))
        except FileNotFoundError as err:  # no class folders, or no images in them
            raise DatasetNotFoundError(f"dataset {self.name}: {self.path / 'train'}: {one_line(err, kind=True, limit=240)}") from None
        # The test split uses the train split's class indices: a class missing from test must not shift labels.
        try:
            test_samples = torchvision.datasets.ImageFolder.make_dataset(
                str(self.path / "test"), train.class_to_idx, extensions=IMAGE_EXTENSIONS, allow_empty=True
            )
        except FileNotFoundError as err:
            raise DatasetNotFoundError(f"dataset {self.name}: {self.path / 'test'}: {one_line(err, kind=True, limit=240)}") from None
        test_classes = {p.name for p in (self.path / "test").iterdir() if p.is_dir()}
        if test_classes - set(train.classes):
            raise ValueError(f"dataset {self.name}: test classes {sorted(test_classes - set(train.classes))} are not in {self.path / 'train'}")
        counts = (len(train.samples), len(test_samples))
        if self.expected_sizes is not None and counts != self.expected_sizes:
            # A partial copy (e.g. a test fixture's subset in the shared data folder) would train without complaint.
            log.warning(
                "%s: %s holds %d train / %d test images, the full dataset %d / %d: a partial copy? Complete it with: %s",
                self.name, self.path, *counts, *self.expected_sizes, self.prepare_command(),
            )
        with _open_image(train.samples[0][0]) as first:
            mode = _mode(first)
            size = self.image_size or (first.height, first.width)
        # A folder tree lists the images class by class. A fixed shuffle of the test split makes every
        # test batch a mix of classes, as in torchvision's datasets: per-sample signal metrics compare
        # samples within a batch, and batch statistics at test time would otherwise see one class.
        test_samples = [test_samples[i] for i in torch.randperm(len(test_samples), generator=torch.Generator().manual_seed(0))]
        train_x, train_y = self._split("train", train.samples, mode, size)
        test_x, test_y = self._split("test", test_samples, mode, size)
        return train_x, train_y, test_x, test_y, len(train.classes)

    def _fingerprint(self, samples: list[tuple[str, int]], mode: str, size: tuple[int, int]) -> str:
        """What the cache is valid for: the settings, and every file's path, label, size and modification time
        in nanoseconds (an image replaced by another of the same size changes the time)."""
        digest = hashlib.sha256(f"{CACHE_VERSION}|{self.path}|{mode}|{size}".encode())
        for file, label in samples:
            stat = os.stat(file)
            digest.update(f"\n{os.path.relpath(file, self.path)}|{stat.st_size}|{stat.st_mtime_ns}|{label}".encode())
        return digest.hexdigest()

    def _split(self, split: str, samples: list[tuple[str, int]], mode: str, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        cache = self.root / ".cache" / f"{self.name}-{split}.pt"
        fingerprint = self._fingerprint(samples, mode, size)
        if cache.is_file():
            try:
                saved = torch.load(cache, weights_only=True)
                if saved.get("fingerprint") == fingerprint:
                    log.info("%s: %s split from cache %s", self.name, split, cache)
                    return saved["images"], saved["labels"]
                log.info("%s: cache %s is stale (files or settings changed); decoding again", self.name, cache)
            except Exception as err:  # a corrupt cache is only a lost shortcut: decode again
                log.warning("%s: ignoring unreadable cache %s (%s)", self.name, cache, one_line(err, kind=True, limit=240))
        images, labels = self._decode(samples, mode, size)
        self._save(cache, {"fingerprint": fingerprint, "images": images, "labels": labels})
        return images, labels

    def _decode(self, samples: list[tuple[str, int]], mode: str, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        channels = 1 if mode == "L" else 3
        out = torch.empty((len(samples), channels, *size), dtype=torch.uint8)
        files = [file for file, _ in samples]
        chunks = [range(i, min(i + DECODE_CHUNK, len(files))) for i in range(0, len(files), DECODE_CHUNK)]
        log.info("%s: decoding %d images from %s with %d threads", self.name, len(files), self.path, self.workers)
        # torchvision's decoders run in C++ without the GIL, so threads share the work across cores.
        # They warn that TorchCodec will replace them; that is no concern of a user, and PIL takes over once they go.
        with warnings.catch_warnings(), ThreadPoolExecutor(self.workers) as pool:
            warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated")
            for _ in pool.map(lambda rows: self._decode_chunk(files, rows, out, mode, size), chunks):
                pass
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return out, labels

    def _decode_chunk(self, files: list[str], rows: range, out: Tensor, mode: str, size: tuple[int, int]) -> None:
        import torchvision
        from torchvision.transforms.v2.functional import resize

        read_mode = torchvision.io.ImageReadMode.GRAY if mode == "L" else torchvision.io.ImageReadMode.RGB
        jpegs = [i for i in rows if files[i].lower().endswith((".jpg", ".jpeg"))] if batch_jpeg() else []
        decoded: dict[int, Tensor] = {}
        if jpegs:
            try:  # one batched call: several times faster than PIL for small JPEGs
                batch = torchvision.io.decode_jpeg([torchvision.io.read_file(files[i]) for i in jpegs], mode=read_mode)
                decoded = dict(zip(jpegs, batch, strict=True))
            except RuntimeError:  # an unusual JPEG: fall back to PIL, which also names a broken file
                decoded = {}
        for i in rows:
            image = decoded[i] if i in decoded else self._decode_pil(files[i], mode)
            if tuple(image.shape[1:]) != size:
                if self.image_size is None:
                    raise ValueError(
                        f"dataset {self.name}: {files[i]} is {image.shape[2]}x{image.shape[1]} pixels, the first image "
                        f"{size[1]}x{size[0]}: set dataset.image_size to resize them to one size"
                    )
                image = resize(image, list(size), antialias=True)
            out[i] = image

    @staticmethod
    def _decode_pil(file: str, mode: str) -> Tensor:
        with _open_image(file) as im:
            array = np.asarray(im.convert(mode))
        return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1).copy()).permute(2, 0, 1)

    def source(self, split: str, kind: str) -> str:
        return str(self.path / split)

    def _save(self, cache: Path, payload: dict[str, Any]) -> None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.{os.getpid()}.part")
            try:
                torch.save(payload, tmp)
                os.replace(tmp, cache)  # atomic: a concurrent or interrupted run never reads half a cache
            finally:
                tmp.unlink(missing_ok=True)
            log.info("%s: cached decoded images in %s", self.name, cache)
        except OSError as err:  # a read-only data folder only costs decoding time on the next run
            log.warning("%s: could not write cache %s (%s)", self.name, cache, one_line(err, kind=True, limit=240))


class CIFAR10JPEG(ImageFolder):
    """The JPEG copy of CIFAR-10 as ``<root>/cifar10-jpeg/{train,test}/<class>/*.jpg`` (32x32, 10 classes)."""

    channels = 3
    image_shape = (32, 32)
    expected_sizes = (50_000, 10_000)

    def __init__(self, root: str | os.PathLike[str], name: str = "cifar10_jpeg", **settings: Any) -> None:
        super().__init__(root=root, name=name, **settings)

    @property
    def folder(self) -> str:
        return CIFAR10_JPEG_FOLDER

    def prepare_command(self) -> str:
        return f"python -m sigprop.data.prepare cifar10_jpeg --source cifar10-jpeg.tar.gz --data-dir {self.root}"


# The class behind every ``conf/dataset/<name>.yaml``.
DATASETS: dict[str, type[Dataset]] = {
    "embedded": Embedded, "mnist": MNIST, "fashion_mnist": FashionMNIST, "cifar10": CIFAR10,
    "cifar100": CIFAR100, "svhn": SVHN, "stl10": STL10, "image_folder": ImageFolder, "cifar10_jpeg": CIFAR10JPEG,
}
