"""Datasets for the training application: torchvision builders, the embedded default, offline import.

``conf/dataset/<name>.yaml`` instantiates a :class:`Dataset`; its ``load()`` gives an
:class:`ImageData` (``uint8`` tensors + normalisation + augmentation) for :class:`TensorLoader`.
"""
from .datasets import (
    CIFAR10,
    CIFAR10JPEG,
    CIFAR100,
    DATASETS,
    MNIST,
    STL10,
    SVHN,
    Dataset,
    DatasetNotFoundError,
    Embedded,
    FashionMNIST,
    ImageData,
    ImageFolder,
    TorchvisionDataset,
    stratified_indices,
)
from .loader import Augment, TensorLoader
from .offline import import_idx, import_image_folder

__all__ = [
    "Augment", "CIFAR10", "CIFAR10JPEG", "CIFAR100", "DATASETS", "Dataset", "DatasetNotFoundError", "Embedded",
    "FashionMNIST", "ImageData", "ImageFolder", "MNIST", "STL10", "SVHN", "TensorLoader", "TorchvisionDataset",
    "import_idx", "import_image_folder", "stratified_indices",
]
