"""Device-side augmentation: crop, flip and cutout do what they say, reproducibly, on real images."""
from __future__ import annotations

import torch

from sigprop.data.loader import Augment, TensorLoader

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def uint8_images(cifar10_subset, n: int = 48) -> torch.Tensor:
    """Real CIFAR-10 images back as uint8 pixels (the fixture gives them normalised)."""
    x = cifar10_subset[0][:: len(cifar10_subset[0]) // n][:n]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def windows(image: torch.Tensor, pad: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every crop (and its mirror) of ``image`` zero-padded by ``pad``."""
    c, h, w = image.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=image.dtype)
    padded[:, pad : pad + h, pad : pad + w] = image
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[:, dy : dy + h, dx : dx + w]
            out += [(dy, dx, False, win), (dy, dx, True, win.flip(2))]
    return out


def test_crop_and_flip_are_windows_of_the_black_padded_image(cifar10_subset) -> None:
    images = uint8_images(cifar10_subset)
    out = Augment(crop_padding=4, flip=True).geometric(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    shifts, flips = set(), 0
    for image, got in zip(images, out):
        matches = [(dy, dx, f) for dy, dx, f, win in windows(image, 4) if torch.equal(win, got)]
        assert matches, "not a window of the zero-padded image"
        dy, dx, f = matches[0]
        shifts.add((dy, dx))
        flips += f
    assert len(shifts) > 10  # random offsets, not a fixed one
    assert 0 < flips < len(images)  # about half flipped


def test_flip_only_flips_and_float_input_works(cifar10_subset) -> None:
    images = uint8_images(cifar10_subset).float() / 255
    out = Augment(flip=True).geometric(images, torch.Generator().manual_seed(1))
    for image, got in zip(images, out):
        assert torch.equal(got, image) or torch.equal(got, image.flip(2))
    assert not torch.equal(out, images)


def test_cutout_zeroes_one_square_of_the_right_size(cifar10_subset) -> None:
    x = uint8_images(cifar10_subset).float() / 255 + 1.0  # strictly positive: zeros are cutout
    length = 8
    out = Augment(cutout_patches=1, cutout_length=length).cutout(x, torch.Generator().manual_seed(2))
    for image, got in zip(x, out):
        zero = (got == 0).all(0)  # (H, W): the same square in every channel
        assert torch.equal((got == 0), zero.expand_as(got))
        rows, cols = zero.any(1).nonzero()[:, 0], zero.any(0).nonzero()[:, 0]
        # A full square, clipped at the image border only.
        assert zero.sum() == len(rows) * len(cols) > 0
        assert len(rows) == length or rows.min() == 0 or rows.max() == x.shape[2] - 1
        assert len(cols) == length or cols.min() == 0 or cols.max() == x.shape[3] - 1
        assert len(rows) >= length // 2 and len(cols) >= length // 2
        assert torch.equal(got[:, ~zero], image[:, ~zero])


def test_seeded_generator_gives_the_same_batches(cifar10_subset) -> None:
    images = uint8_images(cifar10_subset)
    labels = torch.arange(len(images)) % 10
    augment = Augment(crop_padding=4, flip=True, cutout_patches=1, cutout_length=8)

    def epoch(seed: int) -> list[torch.Tensor]:
        loader = TensorLoader(images, labels, 16, MEAN, STD, shuffle=True, augment=augment,
                              generator=torch.Generator().manual_seed(seed))
        return [torch.cat([x.flatten(1), y[:, None].float()], 1) for x, y in loader]

    a, b, c = epoch(5), epoch(5), epoch(6)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_loader_normalises_like_the_formula(cifar10_subset) -> None:
    images = uint8_images(cifar10_subset)
    loader = TensorLoader(images, torch.zeros(len(images), dtype=torch.long), 16, MEAN, STD)
    x, _ = next(iter(loader))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (images[:16].float() / 255 - mean) / std)
