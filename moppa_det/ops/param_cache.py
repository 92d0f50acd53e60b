"""Caching values that depend on parameters alone (spectral gains, resized maps) for inference.

A spectral adapter recomputes, every forward, tensors that do not depend on its input: the
per-frequency gains of each prior on the runtime grid, the source or coefficient maps resized to
it, a static router. In ``eval()`` under ``torch.no_grad()`` they are computed once per key
(grid size, device) and reused while the parameters they were computed from are unchanged.

A cached entry is stamped with each parameter's storage pointer, version counter, device and
dtype: an optimizer step, ``load_state_dict`` (both write in place, which bumps the version),
``.to()`` or assigning ``param.data`` invalidate it. Writes that bypass the version counter
(``param.data.add_(...)``) do not: call :meth:`ParamCache.clear` after those. Owners also clear
their caches in ``train()``.

The cache is bypassed (values computed as in training) while autograd could need the
parameters' graph, and while ``torch.compile`` traces (its guards cannot read version counters;
the compiled graph computes the values itself). Pure torch.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Sequence

import torch

Stamp = tuple[tuple[int, int, torch.device, torch.dtype], ...]


def _stamp(params: Sequence[torch.Tensor]) -> Stamp:
    return tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in params)


def caching_allowed(params: Sequence[torch.Tensor]) -> bool:
    """True where a value computed without autograd may stand in for the computation."""
    if torch.compiler.is_compiling():
        return False
    return not (torch.is_grad_enabled() and any(p.requires_grad for p in params))


class ParamCache:
    """A bounded map key -> tensor, each entry valid while its parameters are unchanged.

    Args:
        max_entries: Entries kept (least recently used dropped first); detection runs see a
            few dozen grid sizes.
    """

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self.enabled = True
        self._entries: OrderedDict[Hashable, tuple[Stamp, object]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, params: Sequence[torch.Tensor],
            compute: Callable[[], object]) -> object:
        """The cached value of ``compute()`` for ``key``, recomputed if ``params`` changed.

        Args:
            key: What else the value depends on (grid size, device, ...).
            params: The parameters the value is computed from.
            compute: Computes the value (a tensor or a tuple/dict of tensors).

        Returns:
            ``compute()``'s value; from the cache when allowed (see :func:`caching_allowed`).
        """
        if not (self.enabled and caching_allowed(params)):
            return compute()
        stamp = _stamp(params)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == stamp:
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]
        self.misses += 1
        value = compute()
        self._entries[key] = (stamp, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forgets every entry."""
        self._entries.clear()

    def __deepcopy__(self, memo: dict) -> 'ParamCache':
        # A copy's parameters live elsewhere: start empty instead of copying stale tensors.
        copy = ParamCache(self.max_entries)
        copy.enabled = self.enabled
        return copy


__all__ = ['ParamCache', 'caching_allowed']
