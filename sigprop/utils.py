"""Small helpers shared across the library."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable

import torch


def shape_numel(shape: Iterable[int]) -> int:
    """Number of elements in a tensor of the given shape (without the batch dimension)."""
    return int(math.prod(int(s) for s in shape))


def one_line(err: BaseException, *, kind: bool = False, limit: int | None = None) -> str:
    """An exception's message on one line, for an error line a user reads.

    Lines are joined and those that repeat the message for developers dropped: Hydra's config search path,
    OmegaConf's ``full_key:``/``object_type=`` lines; a rejected override (``Error merging override epochs=abc``,
    the reason in its cause) reads ``epochs=abc: <reason>``. ``kind`` puts the exception's type first (for errors
    whose message alone does not say what failed), ``limit`` cuts a long message (torch's, torchvision's) to that
    many characters.
    """
    text = str(err).split("Config search path:")[0]
    prefix = "Error merging override "
    if text.startswith(prefix) and err.__cause__ is not None:
        text = f"{text[len(prefix):]}: {err.__cause__}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("full_key:", "object_type=", "reference_type=", "msg="))]
    text = " ".join(" ".join(lines).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text}" if kind else text


def without_autocast(device_type: str) -> Any:
    """A context that turns an enclosing autocast region off for ``device_type`` (a no-op outside one)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
