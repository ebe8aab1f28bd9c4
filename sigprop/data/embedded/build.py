"""Rebuild ``sigprop/data/embedded/mnist_small.npz``, the MNIST subset shipped as the default dataset.

    python -m sigprop.data.embedded --source DIR [--out FILE] [--train 10000] [--test 10000] [--seed 0]

``DIR`` holds the four original MNIST IDX files (``.gz`` or plain). The training images are a
stratified, seeded subset (see ``sigprop.data.datasets.stratified_indices``); with the defaults the
test images are the whole MNIST test set. The output is byte-identical for the same inputs.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from ..datasets import EMBEDDED_FILE, stratified_indices
from ..offline import IDX_FILES, read_idx, save_npz

log = logging.getLogger("sigprop.data.embedded")
DEFAULT_OUT = Path(__file__).resolve().parent / EMBEDDED_FILE  # the package's own copy


def idx_file(source: Path, name: str) -> Path:
    """The ``.gz`` or plain IDX file ``name`` in ``source``."""
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"--source {source}: {name}(.gz) not found; the four MNIST IDX files must be there")


def subset(images: np.ndarray, labels: np.ndarray, size: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A stratified subset of one split (the whole split when ``size`` equals its length)."""
    if size == len(labels):
        return images, labels
    if not 0 < size < len(labels):
        raise ValueError(f"--{split} {size}: must be between 1 and {len(labels)}")
    idx = stratified_indices(labels, size, seed).numpy()
    return images[idx], labels[idx]


def build(source: Path, out: Path, train: int, test: int, seed: int) -> dict[str, np.ndarray]:
    """Read full MNIST from ``source``, take the subsets and write them to ``out``."""
    files = {name: idx_file(source, name) for name in IDX_FILES}  # all present before any work
    train_x = read_idx(files["train-images-idx3-ubyte"])[:, None]
    train_y = read_idx(files["train-labels-idx1-ubyte"])
    test_x = read_idx(files["t10k-images-idx3-ubyte"])[:, None]
    test_y = read_idx(files["t10k-labels-idx1-ubyte"])
    train_x, train_y = subset(train_x, train_y, train, seed, "train")
    test_x, test_y = subset(test_x, test_y, test, seed, "test")
    arrays = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_npz(out, arrays)
    log.info("wrote %s: %d train / %d test images, %.2f MB", out, len(train_y), len(test_y), out.stat().st_size / 1e6)
    return arrays


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m sigprop.data.embedded", description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder with the four MNIST IDX files (.gz or plain)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: %(default)s)")
    parser.add_argument("--train", type=int, default=10_000, help="training images, stratified (default: %(default)s of 60000)")
    parser.add_argument("--test", type=int, default=10_000, help="test images, stratified (default: %(default)s, the whole test set)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset choice (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build(args.source, args.out, args.train, args.test, args.seed)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: {err}\n")
