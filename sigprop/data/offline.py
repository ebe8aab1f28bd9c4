"""Import dataset copies a user already has into torchvision's own on-disk layout."""
from __future__ import annotations

import gzip
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def import_idx(source: str | Path, root: str | Path, folder: str = "MNIST") -> Path:
    """Decompress the four MNIST-style IDX files from ``source`` into ``root/folder/raw``.

    ``source`` may hold them gzip-compressed (``*.gz``) or plain. The result is what
    torchvision's ``MNIST``/``FashionMNIST`` classes read with ``download=False``
    (``folder`` is the class name, e.g. ``FashionMNIST``). Files already in place are kept.
    """
    source, raw = Path(source), Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        dest = raw / name
        if dest.exists():
            continue
        plain, packed = source / name, source / f"{name}.gz"
        tmp = dest.with_suffix(".part")
        if packed.exists():
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
        elif plain.exists():
            shutil.copyfile(plain, tmp)
        else:
            raise FileNotFoundError(f"{packed} (or {plain}) not found: the IDX files must be in {source}")
        tmp.replace(dest)
        log.info("imported %s", dest)
    return raw
