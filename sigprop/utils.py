"""Small helpers shared across the library."""
from __future__ import annotations

import math
from typing import Iterable


def shape_numel(shape: Iterable[int]) -> int:
    """Number of elements in a tensor of the given shape (without the batch dimension)."""
    return int(math.prod(int(s) for s in shape))
