"""Applying a map-to-map function on each image's own valid grid of a padded batch.

Detection batches are padded to their largest image. A spectral filter over the padded canvas
would treat the padding as signal, so an image's features would depend on its batch-mates.
These helpers crop each image to its valid (h, w) region, batch the images that share a valid
size into one call, and leave the padding untouched.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch

GridSizes = Sequence[tuple[int, int]]


def valid_groups(sizes: GridSizes | None, batch: int, full: tuple[int, int]
                 ) -> Iterator[tuple[list[int] | None, int, int]]:
    """Groups the images of a batch by valid grid size.

    Args:
        sizes: Valid (h, w) of every image, or None when the whole grid is valid.
        batch: Batch size B.
        full: The padded grid (H, W).

    Yields:
        (indices, h, w): the batch indices of the images of valid size (h, w); indices is
        None when every image of the batch is valid over the whole grid (no crop needed).
    """
    if sizes is None:
        yield None, full[0], full[1]
        return
    if len(sizes) != batch:
        raise ValueError(f'{len(sizes)} valid grid sizes for a batch of {batch} images')
    clipped = [(min(max(int(h), 1), full[0]), min(max(int(w), 1), full[1])) for h, w in sizes]
    if all(size == tuple(full) for size in clipped):
        yield None, full[0], full[1]
        return
    groups: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(clipped):
        groups.setdefault(size, []).append(index)
    for (h, w), indices in groups.items():
        yield indices, h, w


def apply_within(x: torch.Tensor, sizes: GridSizes | None,
                 fn: Callable[[torch.Tensor], torch.Tensor],
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """y = fn(x) on every image's valid region; y = x on the padding.

    Images that share a valid size are cropped and passed to ``fn`` together.

    Args:
        x: Maps of shape (B, H, W, C).
        sizes: Valid (h, w) of every image (clipped to (H, W)), or None: all of it is valid.
        fn: Maps (b, h, w, C) to a tensor of the same shape.
        out: Optional (B, H, W, C) tensor to write y into (no autograd).

    Returns:
        Tensor of shape (B, H, W, C): ``out`` when given.
    """
    b, h_full, w_full = x.shape[:3]
    result = None
    for indices, h, w in valid_groups(sizes, b, (h_full, w_full)):
        if indices is None:
            return fn(x) if out is None else out.copy_(fn(x))
        if result is None:
            result = x.clone() if out is None else out.copy_(x)
        index = torch.as_tensor(indices, device=x.device)
        result[index, :h, :w] = fn(x[index, :h, :w])
    return result


def valid_mask(sizes: GridSizes | None, batch: int, full: tuple[int, int],
               device: torch.device | None = None) -> torch.Tensor:
    """Boolean (B, H, W) mask of the valid positions (all True when ``sizes`` is None)."""
    mask = torch.zeros(batch, *full, dtype=torch.bool, device=device)
    for indices, h, w in valid_groups(sizes, batch, full):
        if indices is None:
            return mask.fill_(True)
        mask[torch.as_tensor(indices, device=device), :h, :w] = True
    return mask
