"""Checks of a detector's parts against each other, naming the config fields at fault."""
from __future__ import annotations

import torch


def check_neck_fits_backbone(backbone: torch.nn.Module, neck: torch.nn.Module | None) -> None:
    """Raises ``ValueError`` when the neck's ``in_channels`` differ from the backbone's outputs.

    The backbones declare ``out_channels``; catching a mismatch here names the config fields at
    fault instead of failing later inside a convolution.
    """
    declared = getattr(backbone, 'out_channels', None)
    expected = getattr(neck, 'in_channels', None)
    if declared is None or expected is None:
        return
    fits = expected == declared[-1] if isinstance(expected, int) else list(expected) == declared
    if not fits:
        raise ValueError(f'model.neck.in_channels={expected} does not match the outputs of '
                         f'model.backbone ({getattr(backbone, "model_name", "?")}): '
                         f'out_channels={declared}')
