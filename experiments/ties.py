"""How often an exact comparison misses the targets the losses mean to tie, and how the tie rule does.

    python experiments/ties.py [--batch 128]

The losses v9, v14 and v15 read which targets match from ``yy = t0 @ t0.T``: the targets of one
class have equal signal rows, so their entries are equal in exact arithmetic. A kernel sums the
products in its own order (blocking, tile edges, threads, the CPU's vector width), so in floating
point they are equal only up to rounding. This script computes ``yy`` for real class targets (the
class means of the MNIST digits shipped in the package, through a fixed random layer, scaled to
unit norm) in several summation orders that other kernels use, and prints, per shape, dtype and
order: how many same-class pairs an exact comparison with the row maximum finds (the reference
package's ``yy == yy.max(1)``) and how many different-class pairs it ties, the same for the tie rule
of ``sigprop.loss.ties``, and the largest distance of a same-class entry from its row's maximum in
units of ``sqrt(n) * eps * max|row|`` (what ``TIE_ULPS`` is measured against). The "bf16 product"
order is the similarity a bf16 autocast region computed before ``target_similarity`` moved to float32.
tests/test_ties.py checks the same orders.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sigprop.data import Embedded
from sigprop.loss import similarity
from sigprop.loss.ties import max_matches

SHAPES = [(64,), (1024,), (8, 4, 4), (32, 7, 7), (32, 16, 16), (128, 16, 16)]


def class_targets(shape: tuple[int, ...], dtype: torch.dtype, images: Tensor, labels: Tensor) -> Tensor:
    """One target per class ``(10, *shape)``: the class means of ``images`` (``(N, 1, 28, 28)``) through a
    fixed random layer to ``shape`` (a linear map for one dimension, a 3x3 convolution pooled to the size
    otherwise) and a ReLU, scaled to unit norm, so that each target is most similar to itself."""
    means = torch.stack([images[labels == c].double().mean(0) for c in range(10)])
    g = torch.Generator().manual_seed(0)
    if len(shape) == 1:
        out = F.relu(means.flatten(1) @ torch.randn(means[0].numel(), shape[0], generator=g, dtype=torch.float64))
    else:
        kernel = torch.randn(shape[0], means.shape[1], 3, 3, generator=g, dtype=torch.float64)
        out = F.adaptive_avg_pool2d(F.relu(F.conv2d(means, kernel, padding=1)), shape[1:])
    out = out / out.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))
    return out.to(dtype)


def orders(t0: Tensor) -> dict[str, Tensor]:
    """``similarity.target_similarity(t0)`` computed in the summation orders of other kernels."""
    n, p = t0[0].numel(), similarity.positions(t0)
    flat = t0.flatten(1).float() if t0.dtype == torch.bfloat16 else t0.flatten(1)
    out = {"matrix product": similarity.target_similarity(t0)}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out["one thread"] = similarity.target_similarity(t0)
    finally:
        torch.set_num_threads(threads)
    perm = torch.randperm(t0.shape[0], generator=torch.Generator().manual_seed(1))
    inverse = perm.argsort()
    out["permuted batch"] = similarity.target_similarity(t0[perm])[inverse][:, inverse]
    blocks = [flat[:, i : i + 97] @ flat[:, i : i + 97].t() for i in range(0, n, 97)]
    out["blocks of 97 features"] = torch.stack(blocks).sum(0) / p
    # Columns from two kernels, as at a tile edge: the first half from the product, the rest from blocks.
    half = t0.shape[0] // 2
    out["mixed columns"] = torch.cat([out["matrix product"][:, :half], out["blocks of 97 features"][:, half:]], 1)
    out["reversed features"] = similarity.target_similarity(flat.flip(1)) / p
    if t0.dtype == torch.bfloat16:  # without the upcast: a bf16 product under autocast, rounded to 8 bits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out["bf16 product"] = (t0.flatten(1) @ t0.flatten(1).t()) / p
    if t0.dim() == 4:
        out["channels-last"] = similarity.target_similarity(t0.contiguous(memory_format=torch.channels_last))
        out["per position"] = torch.einsum("icp,jcp->ij", flat.view(*t0.shape[:2], -1), flat.view(*t0.shape[:2], -1)) / p
    return out


def measure(batch: int) -> list[dict[str, object]]:
    """One row per shape, dtype and order (see the module's docstring)."""
    data = Embedded().load()
    images, labels = data.train_images.float() / 255, data.train_labels
    batch_labels = labels[:batch]
    same = batch_labels[:, None] == batch_labels[None, :]
    rows = []
    for shape in SHAPES:
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            t0 = class_targets(shape, dtype, images.view(-1, 1, 28, 28), labels)[batch_labels]
            n = t0[0].numel()
            for order, yy in orders(t0).items():
                exact = yy == yy.amax(1, keepdim=True)
                row = {
                    "shape": "x".join(map(str, shape)), "dtype": str(dtype).removeprefix("torch."), "order": order,
                    "pairs": int(same.sum()), "exact": int((same & exact).sum()), "exact wrong": int((~same & exact).sum()),
                }
                if yy.dtype != torch.bfloat16:  # the library compares float32 or wider (target_similarity)
                    scale = yy.abs().amax(1, keepdim=True)
                    distance = (yy.amax(1, keepdim=True) - yy) / (math.sqrt(n) * torch.finfo(yy.dtype).eps * scale)
                    ties = max_matches(yy, n)
                    row |= {"ties": int((same & ties).sum()), "ties wrong": int((~same & ties).sum()), "distance": float(distance[same].max())}
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="samples per batch (default 128)")
    args = parser.parse_args()
    print("| t0 shape | dtype | order | same-class pairs | exact == finds | exact == ties other classes "
          "| tie rule finds | tie rule ties other classes | largest distance (sqrt(n) eps) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in measure(args.batch):
        ties = f"{r['ties']} | {r['ties wrong']} | {r['distance']:.3f}" if "ties" in r else "- | - | -"
        print(f"| {r['shape']} | {r['dtype']} | {r['order']} | {r['pairs']} | {r['exact']} | {r['exact wrong']} | {ties} |")

if __name__ == "__main__":
    main()
