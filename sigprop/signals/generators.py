"""Signal generators: make the signal ``t1`` (and the first layer's input ``h1``) from the target."""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Generator

Shape = Sequence[int]


def _freeze(*modules: nn.Module) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)


def project(module: nn.Module, t0: Tensor | None, output_shape: tuple[int, ...]) -> Tensor | None:
    """``module(t0.flatten(1))`` reshaped to ``(B,) + output_shape`` (``None`` passes through)."""
    if t0 is None:
        return None
    return module(t0.flatten(1)).reshape((t0.shape[0],) + output_shape)


class ProjectionContext(Generator):
    """Projects the flattened target to ``output_shape``: ``t1 = module(t0)``, ``h1 = h0``.

    Args:
        module: maps ``(B, numel(input_shape))`` to ``(B, numel(output_shape))``.
        input_shape: shape of one target (e.g. ``(num_classes,)``).
        output_shape: shape of one signal sample; must match what the first layer takes.
        fixed: freeze ``module`` (a fixed random projection).
    """

    def __init__(self, module: nn.Module, input_shape: Shape, output_shape: Shape, fixed: bool = False) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self.module = module
        if fixed:
            _freeze(module)

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        h0, t0 = input
        return h0, project(self.module, t0, self.output_shape), h0, t0


class ProjectionContextInput(Generator):
    """Projects the target and the input to the same shape: ``t1 = module_context(t0)``, ``h1 = module_input(h0)``.

    Args:
        module_context: maps the flattened target to ``numel(output_shape)`` values.
        module_input: maps an input batch to ``(B,) + output_shape``.
        input_shape: shape of one target.
        output_shape: shape of one signal sample.
        fixed: freeze both modules.
    """

    def __init__(
        self,
        module_context: nn.Module,
        module_input: nn.Module,
        input_shape: Shape,
        output_shape: Shape,
        fixed: bool = False,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self.module_context = module_context
        self.module_input = module_input
        if fixed:
            _freeze(module_context, module_input)

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        h0, t0 = input
        return self.module_input(h0), project(self.module_context, t0, self.output_shape), h0, t0


# 7x7 glyphs of the digits 0-9, as drawn by the reference package.
_DIGITS = (
    ("1111111", "1000001", "1000001", "1000001", "1000001", "1000001", "1111111"),
    ("0001000", "0001000", "0001000", "0001000", "0001000", "0001000", "0001000"),
    ("1111000", "0001000", "0001000", "0001000", "0001000", "0001000", "0001111"),
    ("1111111", "0000001", "0000001", "1111111", "0000001", "0000001", "1111111"),
    ("1000001", "1000001", "1000001", "1111111", "0000001", "0000001", "0000001"),
    ("1111111", "1000000", "1000000", "1111111", "0000001", "0000001", "1111111"),
    ("1000000", "1000000", "1000000", "1111111", "1000001", "1000001", "1111111"),
    ("1111111", "0000001", "0000001", "0000001", "0000001", "0000001", "0000001"),
    ("1111111", "1000001", "1000001", "1111111", "1000001", "1000001", "1111111"),
    ("1111111", "1000001", "1000001", "1111111", "0000001", "0000001", "0000001"),
)


def digit_glyphs() -> Tensor:
    """The ten 7x7 digit glyphs as a ``(10, 7, 7)`` float tensor of 0/1."""
    return torch.tensor([[[float(c) for c in row] for row in digit] for digit in _DIGITS])


LAYOUTS = ("reference", "rows")


def digit_cells(label: int, cell: int, height: int, width: int, layout: str) -> list[tuple[int, int, int]]:
    """Where the digits of ``label`` go: ``(digit, top, left)`` of each drawn ``cell x cell`` square.

    ``reference``: down the first column of cells from the top-left; when the next cell would
    reach the image's bottom edge, the next column starts at the top and the digit that found no
    room is not drawn (the reference package's placement). ``rows``: every digit, left to right,
    then top to bottom.
    """
    digits = [int(d) for d in str(label)]
    if layout == "rows":
        cols = width // cell
        if len(digits) > cols * (height // cell):
            raise ValueError(f"label {label} has {len(digits)} digits but the image holds {cols * (height // cell)} cells")
        return [(d, (k // cols) * cell, (k % cols) * cell) for k, d in enumerate(digits)]
    placed, top, left = [], 0, 0
    for d in digits:
        if top + cell < height:
            if left + cell > width:
                raise ValueError(
                    f"label {label}: a {cell}x{cell} digit cell at column {left} does not fit an image {width} pixels wide"
                )
            placed.append((d, top, left))
            top += cell
        else:
            top, left = 0, left + cell
    return placed


class FixedDrawContext(Generator):
    """Draws each label's decimal digits into an image-shaped signal (no learning).

    The image is cut into square cells of side ``int(sqrt(H * W // places))``; each digit goes
    into a cell as its 7x7 glyph scaled to the cell, strokes at +1 and the glyph's background at
    -1; the rest of the image is 0. Every channel holds the same drawing.

    Args:
        places: how many digit cells the image holds.
        layout: ``"reference"`` (default, for ported code and results): the reference package's
            placement, digit after digit down the first column of cells, then the next column. As
            there, a digit is not drawn where the next cell would reach the image's bottom edge
            (the next one goes to the top of the next column): with ``places=1`` on a square
            image nothing is drawn, and with ``places=4`` only the first digit of a two-digit
            label. A warning says so. ``"rows"``: every digit is drawn, left to right, then top
            to bottom; a label with more digits than cells is an error.

    Labels come as class indices ``(B,)``, numbers ``(B, 1)`` (``LabelVectorToNumber``) or
    one-hot rows ``(B, K)``.
    """

    def __init__(self, places: int, layout: str = "reference") -> None:
        super().__init__()
        if int(places) < 1:
            raise ValueError(f"places must be at least 1, got {places}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.places = int(places)
        self.layout = layout
        self.register_buffer("glyphs", digit_glyphs() * 2 - 1, persistent=False)

    def draw(self, labels: Tensor, shape: Shape, num_labels: int | None = None) -> Tensor:
        """Images ``(B,) + shape`` (``shape = (C, H, W)``) of the given integer labels
        (all below ``num_labels``; ``None``: read their maximum)."""
        c, height, width = shape
        cell = int(math.sqrt((height * width) // self.places))
        if cell < 1:
            raise ValueError(f"an image of {height}x{width} cannot hold {self.places} digit cells")
        if num_labels is None:
            num_labels = int(labels.max()) + 1
        glyphs = F.adaptive_avg_pool2d(self.glyphs.unsqueeze(1), (cell, cell)).squeeze(1)
        templates = torch.zeros(num_labels, height, width, device=labels.device)
        dropped = []
        for label in range(num_labels):
            cells = digit_cells(label, cell, height, width, self.layout)
            if len(cells) < len(str(label)):
                dropped.append(label)
            for digit, top, left in cells:
                templates[label, top : top + cell, left : left + cell] = glyphs[digit]
        if dropped:
            warnings.warn(
                f"FixedDrawContext(places={self.places}, layout='reference') on {height}x{width} images leaves "
                f"digits of {len(dropped)} of {num_labels} labels undrawn (label {dropped[0]} first), as the "
                "reference package does; layout='rows' draws every digit",
                stacklevel=2,
            )
        return templates[labels.long()].unsqueeze(1).expand(-1, c, -1, -1)

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        h0, t0 = input
        if t0 is None:
            return h0, None, h0, t0
        if t0.dim() > 1 and t0.shape[1] > 1:  # one-hot rows: their width is the number of labels
            t1 = self.draw(t0.argmax(1), h0.shape[1:], t0.shape[1])
        else:
            t1 = self.draw(t0.reshape(t0.shape[0]), h0.shape[1:])
        return h0, t1.to(h0.dtype), h0, t0

    def extra_repr(self) -> str:
        return f"places={self.places}, layout={self.layout!r}"
