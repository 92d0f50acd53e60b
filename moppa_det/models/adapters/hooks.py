"""Forward hooks through which adapters act on the pre-trained modules they attach to.

Hooks are small classes rather than closures so that ``copy.deepcopy`` of a backbone (EMA,
model averaging) yields hooks that call the copy's adapters.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Adapter, AdapterHost, BlockSite


class MapHook:
    """Applies ``adapter.adapt_map(site, map, valid, out)`` to a block's norm1 input or output.

    The host turns the tensor into a (B, H, W, C) map of its patches with each image's valid
    grid, and the adapter's new map back (prefix tokens unchanged). Without autograd the adapter
    writes the new map straight into the tensor the hook returns (``out``), so that no copy
    joins it to the prefix tokens.
    """

    def __init__(self, host: AdapterHost, adapter: Adapter, site_index: int,
                 before_norm: bool) -> None:
        self.host, self.adapter = host, adapter
        self.site_index, self.before_norm = site_index, before_norm

    def __call__(self, module: nn.Module, args: tuple, *output: torch.Tensor) -> Any:
        x = args[0] if self.before_norm else output[0]
        site = self.host.sites()[self.site_index]
        grid_map, valid, restore = self.host.map_view(x, site)
        out = restore.output_map() if _may_write_out() else None
        y = restore(self.adapter.adapt_map(site, grid_map, valid, out=out))
        return (y, *args[1:]) if self.before_norm else y


def _may_write_out() -> bool:
    """``out=`` arguments are for plain eager runs: autograd refuses them, and tracers (ONNX
    export, torch.compile) are better off with the functional form."""
    return not (torch.compiler.is_compiling() or torch.is_grad_enabled()
                or torch.jit.is_tracing())


class OutputHook:
    """Replaces a module's output by ``adapter.adapt_output(key, input, output)``."""

    def __init__(self, adapter: Adapter, key: str) -> None:
        self.adapter, self.key = adapter, key

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.adapter.adapt_output(self.key, args[0] if args else None, output)


class InputCaptureHook:
    """Hands a module's input to ``adapter.capture(key, input)`` (e.g. a parallel branch's)."""

    def __init__(self, adapter: Adapter, key: str) -> None:
        self.adapter, self.key = adapter, key

    def __call__(self, module: nn.Module, args: tuple) -> None:
        self.adapter.capture(self.key, args[0])


def hook_norm1(host: AdapterHost, adapter: Adapter, site: BlockSite, before_norm: bool) -> None:
    """Registers a :class:`MapHook` on the block's norm1 (pre-hook when ``before_norm``)."""
    hook = MapHook(host, adapter, site.index, before_norm)
    if before_norm:
        site.norm1.register_forward_pre_hook(hook)
    else:
        site.norm1.register_forward_hook(hook)


def hook_output(module: nn.Module, adapter: Adapter, key: str) -> None:
    """Registers an :class:`OutputHook` on ``module``."""
    module.register_forward_hook(OutputHook(adapter, key))


def hook_input(module: nn.Module, adapter: Adapter, key: str) -> None:
    """Registers an :class:`InputCaptureHook` on ``module``."""
    module.register_forward_pre_hook(InputCaptureHook(adapter, key))
