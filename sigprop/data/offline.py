"""Import dataset copies a user already has into the on-disk layout the dataset classes read.

MNIST-style IDX files go to torchvision's own layout (``<root>/MNIST/raw``), so the unmodified
torchvision classes load them with ``download=False``; folder trees of images (a directory or a
``.tar``/``.tar.gz`` of one) go to ``<data_dir>/<name>/{train,test}/<class>/...``.
"""
from __future__ import annotations

import gzip
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# IDX magic numbers: unsigned bytes, 3 dimensions (images) or 1 dimension (labels).
IDX_MAGIC = {"images": b"\x00\x00\x08\x03", "labels": b"\x00\x00\x08\x01"}
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "test")
CIFAR10_JPEG_FOLDER = "cifar10-jpeg"  # the folder in the shipped cifar10-jpeg.tar.gz
# The files torchvision's ImageFolder reads (torchvision.datasets.folder.IMG_EXTENSIONS), written out so that
# importing this module does not import torchvision, which takes about a second.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _idx_source(source: Path, name: str) -> Path | None:
    for candidate in (source / f"{name}.gz", source / name):
        if candidate.is_file():
            return candidate
    return None


def _idx_bytes(path: Path) -> bytes:
    """The bytes of an IDX file, decompressed if it ends in ``.gz``; ``ValueError`` naming a truncated or corrupt file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except EOFError:
        raise ValueError(f"{path} is truncated (its gzip stream ends early): download it again") from None
    except (OSError, zlib.error) as err:  # BadGzipFile (bad CRC or header) is an OSError
        raise ValueError(f"{path} is corrupt ({err}): download it again") from None


def idx_shape(data: bytes, path: Path, kind: str | None = None) -> tuple[int, ...]:
    """The shape an IDX file's header gives, after checking the header's magic number (unsigned bytes; 3
    dimensions for ``kind="images"``, 1 for ``"labels"``) and that exactly that many bytes follow it."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or (kind is not None and data[:4] != IDX_MAGIC[kind]):
        raise ValueError(f"{path} is not an IDX {kind + ' ' if kind else ''}file of unsigned bytes (wrong header)")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"{path} is truncated: {len(data)} bytes, shorter than its header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = offset + int(np.prod(shape))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(f"{path} is {what}: its header says {shape}, which takes {expected:,} bytes, but it has {len(data):,}")
    return shape


def read_idx(path: str | Path) -> np.ndarray:
    """The ``uint8`` array in an IDX file (``.gz`` or plain), shaped as its header says (checked: see ``idx_shape``)."""
    path = Path(path)
    data = _idx_bytes(path)
    shape = idx_shape(data, path)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(shape)).reshape(shape)


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` like ``np.savez_compressed``, but byte-identical for identical arrays.

    numpy stamps each member with the current time; a fixed timestamp keeps a rebuilt file
    equal to the committed one, so rebuilding does not churn the repository.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    tmp.replace(path)


def idx_split(images: Path, labels: Path, num_classes: int = 10) -> tuple[bytes, bytes]:
    """The bytes of one split's images and labels IDX files (``.gz`` or plain), checked: headers (see
    ``idx_shape``), as many labels as images, every label one of the ``num_classes`` classes. Raises
    ``ValueError`` naming the file at fault (``FileNotFoundError`` for a missing one)."""
    for path in (images, labels):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    image_bytes, label_bytes = _idx_bytes(images), _idx_bytes(labels)
    count = idx_shape(image_bytes, images, "images")[0]
    (label_count,) = idx_shape(label_bytes, labels, "labels")
    if label_count != count:
        raise ValueError(f"{labels} has {label_count:,} labels for the {count:,} images of {images}")
    values = np.frombuffer(label_bytes, dtype=np.uint8, offset=8)
    if values.size and int(values.max()) >= num_classes:
        first = int(np.argmax(values >= num_classes))
        raise ValueError(
            f"{labels} holds label {values[first]} (sample {first:,}); labels must be 0 to {num_classes - 1}: download it again"
        )
    return image_bytes, label_bytes


def import_idx(source: str | Path, root: str | Path, folder: str = "MNIST") -> Path:
    """Decompress the four MNIST-style IDX files from ``source`` into ``root/folder/raw``.

    ``source`` may hold them gzip-compressed (``*.gz``) or plain. The result is what
    torchvision's ``MNIST``/``FashionMNIST`` classes read with ``download=False``
    (``folder`` is the class name, e.g. ``FashionMNIST``). Each split (images and labels together)
    is validated, in place or from ``source`` (``idx_split``: headers, byte lengths, as many labels
    as images, labels 0-9) before anything is written: a split whose files in place pass is kept,
    one that fails in any way is replaced, both files, from ``source``. The files are written to a
    staging folder inside ``raw`` and renamed into place, so a failure or Ctrl-C leaves nothing
    half-written behind. Raises ``ValueError`` (or ``FileNotFoundError``) naming the bad file.
    """
    source, raw = Path(source).expanduser(), Path(root).expanduser() / folder / "raw"
    todo: dict[str, bytes] = {}
    for images, labels in zip(IDX_FILES[::2], IDX_FILES[1::2], strict=True):
        if (raw / images).exists() or (raw / labels).exists():
            try:
                idx_split(raw / images, raw / labels)
                continue
            except ValueError as err:
                log.warning("replacing %s and %s: %s", raw / images, raw / labels, err)
            except FileNotFoundError:
                pass  # half a split in place: both files come from the source
        sources = {name: _idx_source(source, name) for name in (images, labels)}
        if None in sources.values():
            missing = [n for n in IDX_FILES if _idx_source(source, n) is None]
            raise FileNotFoundError(
                f"{source}: missing {', '.join(missing)} (.gz or plain): the four IDX files must be in that folder"
            )
        todo[images], todo[labels] = idx_split(sources[images], sources[labels])  # type: ignore[arg-type]
    if not todo:
        return raw
    raw.mkdir(parents=True, exist_ok=True)
    for stale in [*raw.glob("*.part"), *raw.glob(".staging-*")]:  # left by a killed import
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    # Staged inside raw/ (one filesystem: the moves are renames); the folder goes on any error or Ctrl-C.
    with tempfile.TemporaryDirectory(prefix=".staging-", dir=raw) as staging:
        for name, data in todo.items():
            (Path(staging) / name).write_bytes(data)
        for name in todo:
            os.replace(Path(staging) / name, raw / name)
            log.info("imported %s", raw / name)
    return raw


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _tree_classes(files: list[PurePosixPath]) -> dict[str, dict[str, set[str]]]:
    """Map each candidate tree root to ``{split: {class names}}`` from relative image paths.

    A root is a folder holding ``train/<class>/...`` or ``test/<class>/...``; the shallowest
    ``train``/``test`` folder on a path wins, so class folders may have subfolders (as in ImageFolder).
    """
    roots: dict[str, dict[str, set[str]]] = {}
    for path in files:
        parts = path.parts
        for i, part in enumerate(parts[:-2]):
            if part in SPLITS:
                root = "/".join(parts[:i])
                roots.setdefault(root, {s: set() for s in SPLITS})[part].add(parts[i + 1])
                break
    return roots


def _pick_root(roots: dict[str, dict[str, set[str]]], source: Path) -> str:
    complete = {r: c for r, c in roots.items() if c["train"] and c["test"]}
    if len(complete) != 1:
        found = f"found {sorted(complete)}" if complete else "found none"
        raise ValueError(
            f"{source}: expected one folder with train/<class>/<images> and test/<class>/<images> ({found})"
        )
    (root, classes), = complete.items()
    extra = classes["test"] - classes["train"]
    if extra:
        raise ValueError(f"{source}: test classes {sorted(extra)} have no train folder")
    return root


def _image_files(path: Path) -> list[PurePosixPath]:
    """Relative paths of the image files below ``path`` (os.walk: no stat call per file)."""
    found = []
    for folder, _, names in os.walk(path):
        rel = PurePosixPath(Path(folder).relative_to(path).as_posix())
        found.extend(rel / n for n in names if _is_image(n))
    return found


def find_image_tree(path: str | Path) -> Path:
    """The folder at or below ``path`` holding ``train/<class>/`` and ``test/<class>/`` image folders.

    Raises ``ValueError`` naming ``path`` when there is no such tree or more than one.
    """
    path = Path(path)
    return path / _pick_root(_tree_classes(_image_files(path)), path)


def _tree_files(files: list[PurePosixPath], source: Path) -> tuple[str, dict[PurePosixPath, PurePosixPath]]:
    """The tree's root in ``files`` and a map from each of its split images to its path inside the tree."""
    root = _pick_root(_tree_classes(files), source)
    depth = len(PurePosixPath(root).parts)
    inside = {}
    for f in files:
        # The source may wrap the tree in folders (cifar10-jpeg/train/...): paths are kept relative to its root.
        if "/".join(f.parts[:depth]) == root and len(f.parts) > depth + 2 and f.parts[depth] in SPLITS:
            inside[f] = PurePosixPath(*f.parts[depth:])
    return root, inside


def import_image_folder(source: str | Path, data_dir: str | Path, name: str) -> Path:
    """Copy or extract a tree of images into ``data_dir/name/{train,test}/<class>/...``.

    ``source`` is a folder or a ``.tar``/``.tar.gz``/``.tgz`` archive containing
    ``[prefix/]train/<class>/*`` and ``[prefix/]test/<class>/*``; the layout is checked
    before anything is written. When ``data_dir/name`` already exists, only the images it
    lacks are added (a partial copy is completed; nothing is overwritten or deleted).
    """
    source, dest = Path(source).expanduser(), Path(data_dir).expanduser() / name
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"--name {name!r}: must be a plain folder name")
    if not source.exists():
        raise FileNotFoundError(f"{source} not found: give a folder or a .tar.gz of train/<class>/ and test/<class>/")
    if source.is_dir():
        _, inside = _tree_files(_image_files(source), source)
        _copy_tree(dest, name, inside, lambda todo, staged: _copy_files(source, todo, staged))
    elif tarfile.is_tarfile(source):
        try:
            with tarfile.open(source) as tar:
                members = [m for m in tar.getmembers() if m.isfile() and _is_image(m.name)]
                _, inside = _tree_files([PurePosixPath(m.name) for m in members], source)

                def extract(todo: dict[PurePosixPath, PurePosixPath], staged: Path) -> None:
                    # In archive order (a .gz cannot seek backwards cheaply), renamed to drop the wrapper folder.
                    wanted = [m.replace(name=str(todo[f])) for m in members if (f := PurePosixPath(m.name)) in todo]
                    tar.extractall(staged, members=wanted, filter="data")

                _copy_tree(dest, name, inside, extract)
        except (EOFError, zlib.error, tarfile.ReadError, gzip.BadGzipFile, lzma.LZMAError, OSError) as err:
            if isinstance(err, OSError) and not isinstance(err, gzip.BadGzipFile) and err.errno is not None:
                raise  # the disk, not the archive (e.g. no space left): the caller names it
            raise ValueError(f"{source} is truncated or corrupt ({_reason(err)}): download it again; nothing was written to {dest}") from None
    else:
        raise ValueError(f"{source} is neither a folder nor a tar archive")
    return dest


def _reason(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _copy_files(source: Path, todo: dict[PurePosixPath, PurePosixPath], staged: Path) -> None:
    for src, rel in todo.items():
        (staged / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / src, staged / rel)


def _copy_tree(
    dest: Path,
    name: str,
    inside: dict[PurePosixPath, PurePosixPath],
    write: Callable[[dict[PurePosixPath, PurePosixPath], Path], None],
) -> None:
    """Write the images of ``inside`` that ``dest`` lacks, through a staging folder beside it."""
    todo = inside
    if dest.exists():
        present = _image_files(dest)
        if _pick_root(_tree_classes(present), dest) != "":
            raise ValueError(f"{dest} exists but holds no train/ and test/ class folders directly: remove it or choose another --name")
        have = set(present)
        todo = {src: rel for src, rel in inside.items() if rel not in have}
        if not todo:
            log.info("%s already holds all %d images", dest, len(inside))
            return
        log.info("%s exists; adding the %d images it lacks", dest, len(todo))
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Staged next to the destination so the final moves are renames on the same filesystem.
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=dest.parent) as staging:
        staged = Path(staging) / "tree"
        log.info("writing %d images to %s", len(todo), dest)
        write(todo, staged)
        if not dest.exists():
            staged.rename(dest)  # a fresh tree appears whole or not at all
            return
        for rel in todo.values():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (staged / rel).replace(dest / rel)
