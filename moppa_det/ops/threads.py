"""Intra-op CPU threads of the adapters' inference forms.

An adapter's inference form is about a dozen small operations (tens of MFLOP) beside the block's
large ones. On a CPU every operation that PyTorch parallelises ends in a barrier of its OpenMP
threads, and on a shared machine (more runnable threads than cores) a thread that is waiting
for a core holds that barrier for a scheduler slice, milliseconds, far longer than the operation
itself. Measured (2 cores, load average ~5, ViT-B at 64 x 64 tokens): MoPPA's fused form took a
median 447 ms per block on 2 threads and 129 ms on 1. On an idle many-core machine the same
operations would gain a little from more threads; against the block they are ~1 % either way.

:func:`limited_threads` runs such a section with at most :func:`inference_threads` threads
(default 1) on CPU tensors; :func:`set_inference_threads` changes the limit (``None``: PyTorch's
own setting). It uses ``torch.set_num_threads``, whose OpenMP and MKL settings belong to the
calling thread, and restores the previous count on exit. Pure torch.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

_LIMIT: int | None = 1


def inference_threads() -> int | None:
    """The intra-op thread limit of the adapters' inference forms on CPU (None: no limit)."""
    return _LIMIT


def set_inference_threads(count: int | None) -> None:
    """Sets the limit of :func:`inference_threads`.

    Args:
        count: At most this many intra-op threads (>= 1); ``None`` leaves PyTorch's setting.
    """
    global _LIMIT
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ValueError(f'inference threads must be an integer >= 1 or None, got {count!r}')
    _LIMIT = count


@contextmanager
def limited_threads(device: torch.device) -> Iterator[None]:
    """Runs the body with at most :func:`inference_threads` intra-op threads on ``device``.

    A no-op off the CPU, without a limit, where the limit is not below the current count, with
    autograd on (training keeps PyTorch's setting) and while tracing (the count is not part of
    a traced graph).
    """
    if (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.is_grad_enabled()
            or device.type != 'cpu' or _LIMIT is None or _LIMIT >= torch.get_num_threads()):
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(_LIMIT)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


__all__ = ['inference_threads', 'set_inference_threads', 'limited_threads']
