"""The (B, H, W, C) map view of a block tensor that hosts give map adapters, and the way back.

The host owns the layout: ViT tokens carry prefix tokens (class, registers) before the patch
grid, Swin stage maps are maps already. :class:`MapRestore` puts an adapter's new map back into
the host's layout, and offers a map inside a fresh output tensor for adapters to write into
without autograd, so that no concatenation with the prefix tokens follows.
"""
from __future__ import annotations

import torch


class MapRestore:
    """Puts a new (B, H, W, C) patch map back into the layout of a host tensor ``x``.

    ``x`` holds tokens (B, prefix + H * W, C) whose first ``prefix`` tokens (class, registers)
    pass unchanged, or is a (B, H, W, C) map itself (``grid`` None).

    Args:
        x: The tensor the hook received.
        grid: (H, W) of the patch tokens; None when ``x`` is a map.
        prefix: Leading tokens that are not patches.
    """

    def __init__(self, x: torch.Tensor, grid: tuple[int, int] | None = None,
                 prefix: int = 0) -> None:
        self.x, self.grid, self.prefix = x, grid, prefix
        self._output: tuple[torch.Tensor, torch.Tensor] | None = None

    def patches(self) -> torch.Tensor:
        """The (B, H, W, C) map of x's patches, a view of ``x``."""
        if self.grid is None:
            return self.x
        return self.x[:, self.prefix:].reshape(self.x.shape[0], *self.grid, self.x.shape[-1])

    def output_map(self) -> torch.Tensor:
        """A (B, H, W, C) map to write the new patches into, without autograd (``out=``).

        It views the patches of a new tensor of x's layout whose prefix tokens are already x's,
        so that restoring it copies nothing (instead of concatenating the prefix tokens and the
        new patches into another tensor).
        """
        full = torch.empty(self.x.shape, dtype=self.x.dtype, device=self.x.device)  # dense
        if self.grid is None:
            self._output = (full, full)
            return full
        if self.prefix:
            full[:, :self.prefix] = self.x[:, :self.prefix]
        patches = full[:, self.prefix:].view(self.x.shape[0], *self.grid, self.x.shape[-1])
        self._output = (full, patches)
        return patches

    def __call__(self, new_map: torch.Tensor) -> torch.Tensor:
        """A new (B, H, W, C) patch map in x's layout (prefix tokens unchanged)."""
        if self._output is not None and new_map is self._output[1]:
            return self._output[0]
        if self.grid is None:
            return new_map
        b, h, w, c = new_map.shape
        tokens = new_map.reshape(b, h * w, c)
        return torch.cat([self.x[:, :self.prefix], tokens], dim=1) if self.prefix else tokens


__all__ = ['MapRestore']
