"""A run's folder: claimed by one run before anything is written into it, and cleaned of half-written files.

Two runs started into one folder (``hydra.run.dir=X`` twice, or two sweeps with one
``hydra.sweep.dir``) would write each other's ``.hydra/`` config over the other's metrics. The
first to create ``CLAIM_FILE`` there (an exclusive create: one winner, on every local or network
filesystem that honours ``O_EXCL``) owns the folder; the other stops before writing anything.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from .config import ConfigError

CLAIM_FILE = "run.claim"
PART_SUFFIX = ".part"  # a file being written (checkpoint.pt.part, summary.json.part): renamed when complete


def claim(folder: Path, setting: str = "hydra.run.dir") -> None:
    """Make ``folder`` this process's: create it and ``CLAIM_FILE`` in it, or raise ``ConfigError`` if another
    run has claimed it already."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with open(folder / CLAIM_FILE, "x", encoding="utf-8") as f:
            f.write(f"pid {os.getpid()} on {socket.gethostname()} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    except FileExistsError:
        owner = (folder / CLAIM_FILE).read_text(encoding="utf-8", errors="replace").strip()
        raise ConfigError(
            f"{folder} belongs to another run ({owner or 'its ' + CLAIM_FILE}): give this one its own folder ({setting})"
        ) from None


def remove_parts(folder: Path) -> list[Path]:
    """Delete the half-written ``*.part`` files a killed or failed run left in ``folder``; returns them."""
    parts = sorted(folder.glob(f"*{PART_SUFFIX}")) if folder.is_dir() else []
    for part in parts:
        part.unlink(missing_ok=True)
    return parts
