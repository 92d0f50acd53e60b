"""Deploying an adapted backbone: merging weight adapters, inference caches, cache control.

PEFT semantics (``LoraModel.merge_adapter`` / ``unmerge_adapter``): merging folds each
mergeable adapter's update (LoRA, RLRR, SSF) into the frozen timm weights in place and disables
its hooks; unmerging restores the frozen weights **bit for bit** from a copy taken at merge time
(recomputing W' - dW would only be exact to rounding; RLRR's W' / (1 + s_out s_in^T) not even
that). Adapters whose update depends on the input (MoPPA's per-token router, MoPPAPaper's
spectral filter, AdaptFormer's ReLU bottleneck) cannot be merged; their inference cost is kept
small by caching what does not depend on the input instead.

Order matters where two adapters touch one layer: RLRR scales the frozen weight it reads, so it
is merged before LoRA (whose update does not read it), and adapters are unmerged last-merged
first.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn

from ...ops.param_cache import ParamCache
from .base import Adapter


def _by_name(adapters: nn.ModuleDict, names: Iterable[str] | None) -> list[Adapter]:
    """The adapters called ``names`` (their key, e.g. 'lora', or type, e.g. 'LoRA')."""
    if names is None:
        return [adapter for adapter in adapters.values() if adapter.mergeable]
    chosen = []
    for name in names:
        found = [a for key, a in adapters.items() if name in (key, type(a).__name__)]
        if not found:
            raise ValueError(f'no adapter {name!r} in the backbone; it has '
                             f'{[type(a).__name__ for a in adapters.values()]}')
        if not found[0].mergeable:
            found[0].merge_updates()  # raises the adapter's own TypeError, saying why
        chosen.append(found[0])
    return chosen


def _shared_layers(first: Adapter, second: Adapter) -> bool:
    layers = getattr(first, 'layers', {})
    return any(layer is other for layer in layers.values()
               for other in getattr(second, 'layers', {}).values())


def _check_order(adapters: nn.ModuleDict, chosen: list[Adapter]) -> None:
    """Refuses states where an unmerged RLRR would read a weight another adapter merged into."""
    for rlrr in (a for a in adapters.values() if type(a).__name__ == 'RLRR'):
        for other in adapters.values():
            if other is rlrr or not _shared_layers(rlrr, other):
                continue
            merges_other = other in chosen or other.merged
            if merges_other and not (rlrr in chosen or rlrr.merged):
                raise ValueError(f'merging {type(other).__name__} but not RLRR on the same '
                                 'layers: RLRR scales the frozen weight it reads, so it would '
                                 'scale the merged update too; merge both')
            if rlrr in chosen and other.merged:
                raise ValueError(f'{type(other).__name__} is already merged into layers RLRR '
                                 'adapts: unmerge it first, then merge both')


def merge_adapters(adapters: nn.ModuleDict, names: Iterable[str] | None = None,
                   safe_merge: bool = False, keep_original: bool = True) -> list[str]:
    """Merges adapters into the frozen weights (all mergeable ones when ``names`` is None).

    Args:
        adapters: The backbone's ``adapters``.
        names: Adapter keys or type names; naming one that cannot be merged is an error.
        safe_merge: Check merged values for NaN/inf before writing them.
        keep_original: Keep copies of the frozen weights for an exact :func:`unmerge_adapters`.

    Returns:
        Keys of the adapters merged by this call.
    """
    chosen = [a for a in _by_name(adapters, names) if not a.merged]
    _check_order(adapters, chosen)
    chosen.sort(key=lambda adapter: type(adapter).__name__ != 'RLRR')  # stable: RLRR first
    for adapter in chosen:
        adapter.merge(safe_merge=safe_merge, keep_original=keep_original)
    return [adapter.name for adapter in chosen]


def unmerge_adapters(adapters: nn.ModuleDict) -> list[str]:
    """Unmerges every merged adapter, last merged first. Returns their keys, in that order."""
    merged = sorted((a for a in adapters.values() if a.merged),
                    key=lambda adapter: -adapter.merge_order)
    for adapter in merged:
        adapter.unmerge()
    return [adapter.name for adapter in merged]


def merged_adapter_names(adapters: nn.ModuleDict) -> list[str]:
    """Keys of the merged adapters, in merge order."""
    merged = sorted((a for a in adapters.values() if a.merged), key=lambda a: a.merge_order)
    return [adapter.name for adapter in merged]


def set_inference_caches(module: nn.Module, enabled: bool) -> None:
    """Switches the inference caches of every adapter in ``module`` on or off (and clears them);
    off, eval() computes everything as in training (for comparisons and benchmarks)."""
    for submodule in module.modules():
        for value in vars(submodule).values():
            if isinstance(value, ParamCache):
                value.clear()
                value.enabled = enabled


__all__ = ['merge_adapters', 'unmerge_adapters', 'merged_adapter_names', 'set_inference_caches']
