"""Signal generators: make the signal ``t1`` (and the first layer's input ``h1``) from the target."""
from __future__ import annotations

import math
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


class FixedDrawContext(Generator):
    """Draws each label's decimal digits into an image-shaped signal (no learning).

    The image is cut into ``places`` square cells; digit ``k`` of the label goes into
    cell ``k`` (left to right, then top to bottom) as its glyph scaled to the cell,
    with strokes at +1 and the glyph's background at -1; the rest of the image is 0.

    Args:
        places: how many digit cells the image holds (at least the number of digits of the largest label).
    """

    def __init__(self, places: int) -> None:
        super().__init__()
        if int(places) < 1:
            raise ValueError(f"places must be at least 1, got {places}")
        self.places = int(places)
        self.register_buffer("glyphs", digit_glyphs() * 2 - 1, persistent=False)

    def draw(self, labels: Tensor, shape: Shape) -> Tensor:
        """Images ``(B,) + shape`` (``shape = (C, H, W)``) of the given integer labels."""
        c, height, width = shape
        cell = int(math.sqrt((height * width) // self.places))
        cols, rows = width // max(cell, 1), height // max(cell, 1)
        if cell < 1 or cols * rows < 1:
            raise ValueError(f"an image of {height}x{width} cannot hold {self.places} digit cells")
        n_labels = int(labels.max()) + 1
        n_digits = len(str(n_labels - 1))
        if n_digits > cols * rows:
            raise ValueError(f"label {n_labels - 1} has {n_digits} digits but the image holds {cols * rows} cells")
        glyphs = F.adaptive_avg_pool2d(self.glyphs.unsqueeze(1), (cell, cell)).squeeze(1)
        templates = torch.zeros(n_labels, height, width, device=labels.device)
        for label in range(n_labels):
            for k, digit in enumerate(str(label)):
                r, q = divmod(k, cols)
                templates[label, r * cell : (r + 1) * cell, q * cell : (q + 1) * cell] = glyphs[int(digit)]
        return templates[labels.long()].unsqueeze(1).expand(-1, c, -1, -1)

    def forward(self, input: tuple[Tensor, Tensor | None]) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        h0, t0 = input
        if t0 is None:
            return h0, None, h0, t0
        labels = t0.argmax(1) if t0.dim() > 1 else t0
        return h0, self.draw(labels, h0.shape[1:]).to(h0.dtype), h0, t0

    def extra_repr(self) -> str:
        return f"places={self.places}"
