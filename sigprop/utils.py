"""Small helpers shared across the library."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable

import torch


def shape_numel(shape: Iterable[int]) -> int:
    """Number of elements in a tensor of the given shape (without the batch dimension)."""
    return int(math.prod(int(s) for s in shape))


def without_autocast(device_type: str) -> Any:
    """A context that turns an enclosing autocast region off for ``device_type`` (a no-op outside one)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
