"""A checkpoint is checked before a run resumes from it: every record of its zip archive against the checksum
stored with it, every field for its type and range. A damaged or malformed checkpoint is refused in one line
that names the file, and a resume from it writes nothing. Real checkpoints written by train.py, real processes."""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from app_helpers import TINY, train, train_ok

from sigprop.engine import checks, checkpoint
from sigprop.engine.config import ConfigError


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint.pt of a real one-epoch run."""
    root = tmp_path_factory.mktemp("checkpoint")
    train_ok([*TINY, "logger=none", f"hydra.run.dir={root / 'run'}"], root)
    return root / "run" / checkpoint.CHECKPOINT_FILE


def flip_byte_in_largest_tensor(data: bytes, path: Path) -> bytes:
    """``data`` (a checkpoint) with one bit flipped in the middle of its largest tensor record."""
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    # The record's bytes start after its local header (30 bytes, its name and its extra field).
    name_length, extra_length = struct.unpack("<HH", data[record.header_offset + 26 : record.header_offset + 30])
    start = record.header_offset + 30 + name_length + extra_length
    flipped = bytearray(data)
    flipped[start + record.file_size // 2] ^= 0x01
    return bytes(flipped)


def with_fields(**fields: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda state: {**state, **fields}


def without(field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda state: {k: v for k, v in state.items() if k != field}


# A change to the state a run wrote, and what the one-line refusal says.
MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "the format field alone": (lambda state: {"format": 3}, "is not a usable sigprop checkpoint: no epoch field"),
    "no config": (without("config"), "is not a usable sigprop checkpoint: no config field"),
    "config a string": (with_fields(config="x"), "is not a usable sigprop checkpoint: config is str, not a dict"),
    "no raw config": (lambda state: {**state, "config": {"resolved": {}}}, "no config.raw field"),
    "a negative epoch": (with_fields(epoch=-5), "epoch=-5 (a checkpoint holds at least one completed epoch)"),
    "an epoch its history lacks": (with_fields(epoch=5), "epoch=5 but its metrics history holds epochs [1]"),
    "the format a string": (with_fields(format="3"), "its format field is '3', not a number"),
    "an older format": (with_fields(format=2), "has checkpoint format 2; this version reads format 3"),
    "a random state of the wrong size": (
        lambda state: {**state, "rng": {**state["rng"], "torch": torch.zeros(3, dtype=torch.uint8)}},
        "its random state cannot be restored",
    ),
    "not a dict": (lambda state: [state["epoch"]], "is not a sigprop checkpoint (no format field)"),
}


def test_damaged_and_malformed_checkpoints_are_refused_in_one_line(written: Path, tmp_path: Path) -> None:
    data = written.read_bytes()
    state = torch.load(written, weights_only=True)
    files: dict[str, tuple[Path, str]] = {}
    damaged = {
        "a byte flipped in a tensor": (flip_byte_in_largest_tensor(data, written), "does not match the checksum stored with it"),
        "truncated": (data[: len(data) // 2], "is truncated or corrupt"),
        "a text file": (b"not a checkpoint\n", "is not a sigprop checkpoint (not a file torch.save wrote)"),
    }
    for case, (content, message) in damaged.items():
        files[case] = (tmp_path / f"{case}.pt", message)
        files[case][0].write_bytes(content)
    for case, (change, message) in MALFORMED.items():
        files[case] = (tmp_path / f"{case}.pt", message)
        torch.save(change(state), files[case][0])
    for case, (path, message) in files.items():
        with pytest.raises(ConfigError) as err:
            checks.load_checkpoint(str(path))
        text = str(err.value)
        assert text.startswith(f"resume={path}: {path} ") and message in text and "\n" not in text, (case, text)
    # The file the run wrote is whole: it loads, records and all.
    assert checkpoint.load(written)["epoch"] == 1


def test_resume_from_a_damaged_checkpoint_stops_before_writing(written: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "run" / checkpoint.CHECKPOINT_FILE
    damaged.parent.mkdir()
    damaged.write_bytes(flip_byte_in_largest_tensor(written.read_bytes(), written))
    resumed = tmp_path / "resumed"
    result = train([*TINY, "epochs=2", "logger=none", f"resume={damaged.parent}", f"hydra.run.dir={resumed}"], tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: resume={damaged.parent}: {damaged} is corrupt: its record ") and "checksum" in line, line
    assert not resumed.exists()
