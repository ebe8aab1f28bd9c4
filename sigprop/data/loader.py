"""Batches from a dataset held as one tensor, with augmentation done on the device a batch at a time.

Every dataset the application supports fits in memory as ``uint8``; holding it on the
training device removes per-sample PIL work and host-to-device copies from the step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Augment:
    """Random crop with zero padding, horizontal flip and cutout, applied per sample to a batch.

    Args:
        crop_padding: pad by this many pixels and crop back to the original size (0: off).
        flip: flip half the samples left-right.
        cutout_patches: how many square patches to zero per sample (0: off).
        cutout_length: side of each patch in pixels.
    """

    crop_padding: int = 0
    flip: bool = False
    cutout_patches: int = 0
    cutout_length: int = 16

    def geometric(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Crop and flip, as one gather (works on ``uint8`` pixels too; padding is black as in
        torchvision's RandomCrop)."""
        b, c, h, w = x.shape
        dev = x.device
        p = max(int(self.crop_padding), 0)
        if p == 0 and not self.flip:
            return x
        rows = torch.arange(h, device=dev).expand(b, h)
        cols = torch.arange(w, device=dev).expand(b, w)
        if p > 0:
            dy = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
            dx = torch.randint(0, 2 * p + 1, (b,), device=dev, generator=generator)
            rows, cols = rows + dy[:, None], cols + dx[:, None]
            x = F.pad(x, (p, p, p, p))
        if self.flip:
            # A flipped window reads its columns in reverse order: no separate flip pass.
            flip = torch.rand(b, device=dev, generator=generator) < 0.5
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        batch = torch.arange(b, device=dev)[:, None, None, None]
        chan = torch.arange(c, device=dev)[None, :, None, None]
        return x[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]

    def cutout(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Zero ``cutout_patches`` squares of side ``cutout_length`` per sample (after normalisation)."""
        if self.cutout_patches <= 0 or self.cutout_length <= 0:
            return x
        b, _, h, w = x.shape
        dev = x.device
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        lo, hi = self.cutout_length // 2, (self.cutout_length + 1) // 2
        keep = torch.ones(b, h, w, device=dev, dtype=torch.bool)
        for _ in range(self.cutout_patches):
            cy = torch.randint(0, h, (b, 1, 1), device=dev, generator=generator)
            cx = torch.randint(0, w, (b, 1, 1), device=dev, generator=generator)
            keep &= ~((ys >= cy - lo) & (ys < cy + hi) & (xs >= cx - lo) & (xs < cx + hi))
        return x * keep.unsqueeze(1).to(x.dtype)


class TensorLoader:
    """Iterates ``(x, y)`` batches from ``uint8`` images ``(N, C, H, W)`` and integer labels.

    Images are scaled to [0, 1], normalised with ``mean``/``std`` and augmented on ``device``.

    Args:
        images: ``uint8`` tensor ``(N, C, H, W)``.
        labels: ``int64`` tensor ``(N,)``.
        batch_size: samples per batch (the last batch may be smaller unless ``drop_last``; a last batch of a
            single sample is merged into the one before it, which then has ``batch_size + 1``: batch
            normalisation needs at least two samples for its statistics).
        mean, std: per-channel normalisation.
        shuffle: new random order every epoch (from ``generator``).
        augment: augmentation for training batches, or ``None``.
        device: where batches are produced; the data is moved there once.
        generator: random source for order and augmentation (seeded for reproducible runs).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: Augment | None = None,
        device: str | torch.device = "cpu",
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.long().to(self.device)
        self.batch_size = int(batch_size)
        channels = images.shape[1]
        self.mean = torch.tensor(list(mean), device=self.device).view(1, channels, 1, 1)
        self.std = torch.tensor(list(std), device=self.device).view(1, channels, 1, 1)
        self.scale = 1 / (255 * self.std)
        self.shift = self.mean / self.std
        self.shuffle = shuffle
        self.augment = augment
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = len(self.labels)
        if self.drop_last or (n % self.batch_size == 1 and n > 1):
            return n // self.batch_size
        return -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels) if not self.drop_last else len(self) * self.batch_size

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        count = len(self)
        for i in range(count):
            end = n if i == count - 1 and not self.drop_last else (i + 1) * self.batch_size
            idx = order[i * self.batch_size : end]
            gen = self.generator if self.device.type == "cpu" else None
            x = self.images[idx]
            if self.augment is not None:
                x = self.augment.geometric(x, gen)  # on uint8: a quarter of the bytes to move
            x = x.float().mul_(self.scale).sub_(self.shift)  # (x / 255 - mean) / std in one pass
            if self.augment is not None:
                x = self.augment.cutout(x, gen)
            yield x, self.labels[idx]
