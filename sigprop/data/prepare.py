"""Put offline copies of datasets where the dataset configs read them.

    python -m sigprop.data.prepare mnist --source DIR [--data-dir DIR]
    python -m sigprop.data.prepare fashion_mnist [--source DIR] [--data-dir DIR]
    python -m sigprop.data.prepare image_folder --source DIR_OR_TAR --name NAME [--data-dir DIR]
    python -m sigprop.data.prepare cifar10_jpeg --source cifar10-jpeg.tar.gz [--data-dir DIR]

``--data-dir`` defaults to ``$SIGPROP_DATA_DIR`` or ``data`` (the training config's ``data_dir``).
"""
from __future__ import annotations

import argparse
import logging
import os
import tarfile
from pathlib import Path

from .offline import CIFAR10_JPEG_FOLDER, FASHION_MNIST_DEBIAN, import_idx, import_image_folder

log = logging.getLogger("sigprop.data.prepare")


def default_data_dir() -> Path:
    """``$SIGPROP_DATA_DIR`` or ``data``, the same default as the training config's ``data_dir``."""
    return Path(os.environ.get("SIGPROP_DATA_DIR") or "data")


def prepare(dataset: str, source: Path | None, data_dir: Path, name: str | None = None) -> Path:
    """Import ``dataset`` from ``source`` into ``data_dir``; returns the folder it is in."""
    if dataset == "mnist":
        if source is None:
            raise ValueError("mnist: --source is required (the folder with the four MNIST IDX files)")
        return import_idx(source, data_dir, "MNIST")
    if dataset == "fashion_mnist":
        source = source or FASHION_MNIST_DEBIAN
        if not source.is_dir():
            raise FileNotFoundError(
                f"fashion_mnist: {source} not found: give --source, or apt-get install dataset-fashion-mnist (installs {FASHION_MNIST_DEBIAN})"
            )
        return import_idx(source, data_dir, "FashionMNIST")
    if dataset == "image_folder":
        if source is None or not name:
            raise ValueError("image_folder: --source DIR_OR_TAR and --name NAME are required")
        return import_image_folder(source, data_dir, name)
    if dataset == "cifar10_jpeg":
        if source is None:
            raise ValueError("cifar10_jpeg: --source is required (cifar10-jpeg.tar.gz or its extracted folder)")
        return import_image_folder(source, data_dir, CIFAR10_JPEG_FOLDER)
    raise ValueError(f"unknown dataset {dataset!r}")


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m sigprop.data.prepare",
        description="Put an offline dataset copy where `python train.py dataset=...` reads it.",
    )
    parser.add_argument("dataset", choices=["mnist", "fashion_mnist", "image_folder", "cifar10_jpeg"])
    parser.add_argument(
        "--source", type=Path,
        help=f"mnist/fashion_mnist: folder with the IDX files (fashion_mnist default: {FASHION_MNIST_DEBIAN}); "
        "image_folder/cifar10_jpeg: a folder or .tar.gz holding train/<class>/ and test/<class>/",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="destination (default: $SIGPROP_DATA_DIR or data)")
    parser.add_argument("--name", help="image_folder: the folder under the data dir (dataset.name in the config)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir = (args.data_dir or default_data_dir()).expanduser().absolute()
    try:
        where = prepare(args.dataset, args.source, data_dir, args.name)
    except (OSError, ValueError, tarfile.TarError) as err:
        parser.exit(2, f"prepare {args.dataset}: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"prepare {args.dataset}: interrupted; nothing half-written was left in {data_dir}\n")
    log.info("%s is ready in %s", args.dataset, where)


if __name__ == "__main__":
    main()
