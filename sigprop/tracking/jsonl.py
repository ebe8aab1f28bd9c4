"""``metrics.jsonl``: one JSON object per epoch, written as it happens, and ``summary.json`` at the end."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any, Mapping

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def _json_value(value: Any) -> Any:
    # JSON has no NaN/inf; null keeps every line parseable by strict readers.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlTracker:
    """Appends one line per epoch to ``<run_dir>/metrics.jsonl``, flushed at once (a crash loses nothing logged).

    Refuses to start if the file already exists: an earlier run's metrics are never overwritten.

    Args:
        run_dir: the run's output folder.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.file: IO[str] | None = None

    def start(self, config: Mapping[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "x", encoding="utf-8")  # "x": fail rather than overwrite

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self.file is None:
            raise RuntimeError("JsonlTracker.log() before start()")
        self.file.write(json.dumps({k: _json_value(v) for k, v in metrics.items()}) + "\n")
        self.file.flush()

    def finish(self, summary: Mapping[str, Any], status: str = "finished") -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        write_summary(self.run_dir, summary, status)


def write_summary(run_dir: str | os.PathLike[str], summary: Mapping[str, Any], status: str) -> None:
    """``<run_dir>/summary.json``: ``{"status": status, **summary}``, written whole or not at all (a failed write,
    e.g. on a full disk, leaves no ``.part`` file behind)."""
    run_dir = Path(run_dir)
    tmp = run_dir / f"{SUMMARY_FILE}.part"
    payload = {"status": status, **{k: _json_value(v) for k, v in summary.items()}}
    try:
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, run_dir / SUMMARY_FILE)
    finally:
        tmp.unlink(missing_ok=True)
