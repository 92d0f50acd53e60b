"""Input validation and padding shared by the backbones."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_images(x: torch.Tensor, in_chans: int, min_side: int, name: str) -> None:
    """Raises ``ValueError`` naming the problem for an input the backbone cannot take.

    Args:
        x: The input batch, expected (B, in_chans, H, W).
        in_chans: Channels the backbone's patch embedding expects.
        min_side: Smallest height/width the backbone can take.
        name: The backbone's name, for the message.
    """
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f'{name} expects images of shape (B, {in_chans}, H, W), '
                         f'got {tuple(x.shape)}')
    if min(x.shape[-2:]) < min_side:
        raise ValueError(f'{name} cannot take a {x.shape[-2]}x{x.shape[-1]} input: height and '
                         f'width must be at least {min_side} pixels')


def check_out_indices(indices: list[int], count: int, what: str) -> list[int]:
    """Normalises (negative counts from the end) and validates ``out_indices``.

    Outputs come in forward order, one per index, so the indices must be unique and ascending.

    Raises:
        ValueError: naming ``out_indices`` and the problem.
    """
    normalised = [index % count if -count <= index < count else None for index in indices]
    if None in normalised:
        raise ValueError(f'out_indices {list(indices)} out of range for {count} {what}')
    if not normalised or normalised != sorted(set(normalised)):
        raise ValueError(f'out_indices {list(indices)} must name distinct {what} in ascending '
                         'order (outputs come in forward order)')
    return normalised


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pads (B, C, H, W) at the bottom/right so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def output_size(h: int, w: int, stride: int) -> tuple[int, int]:
    """Size of a stride-``stride`` map of an (h, w) input: ceil(h / stride), ceil(w / stride)."""
    return -(-h // stride), -(-w // stride)
