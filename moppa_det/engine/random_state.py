"""The random number generators of a training process, as plain tensors and ints.

A resumed run can only repeat the uninterrupted one if every generator that training draws
from continues where it stood when the checkpoint was written: Python's ``random``, NumPy's
global generator (MMDetection's ``RandomFlip`` and friends when ``num_workers=0``), torch's CPU
generator (``RandomSampler`` of the RPN and RoI heads, dropout) and the CUDA generators.

The states are stored as tensors, ints and tuples only, so checkpoints holding them load with
``weights_only=True`` and nothing is added to moppa_det's allow-list.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_random_state() -> dict[str, Any]:
    """Returns the state of every global generator of this process.

    Returns:
        ``python``: :func:`random.getstate` (a tuple of ints);
        ``numpy``: NumPy's MT19937 state with the key as an int64 tensor of shape (624,);
        ``torch``: the CPU generator state, a uint8 tensor;
        ``cuda``: one uint8 tensor per visible GPU (empty when CUDA is not in use).
    """
    numpy_state = np.random.get_state(legacy=False)
    cuda = (torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized() else [])
    return dict(
        python=random.getstate(),
        numpy=dict(bit_generator=numpy_state['bit_generator'],
                   key=torch.from_numpy(numpy_state['state']['key'].astype(np.int64)),
                   pos=int(numpy_state['state']['pos']),
                   has_gauss=int(numpy_state['has_gauss']),
                   gauss=float(numpy_state['gauss'])),
        torch=torch.get_rng_state(),
        cuda=list(cuda))


def restore_random_state(state: dict[str, Any]) -> None:
    """Sets every global generator of this process to ``state``.

    Args:
        state: What :func:`capture_random_state` returned (possibly saved and loaded).

    Raises:
        ValueError: If the state was saved with a different number of GPUs in use.
    """
    random.setstate(_as_tuples(state['python']))
    numpy_state = state['numpy']
    np.random.set_state((numpy_state['bit_generator'],
                         numpy_state['key'].numpy().astype(np.uint32),
                         numpy_state['pos'], numpy_state['has_gauss'], numpy_state['gauss']))
    torch.set_rng_state(state['torch'].cpu())
    if state['cuda']:
        if not torch.cuda.is_available() or torch.cuda.device_count() != len(state['cuda']):
            raise ValueError(f'the random state holds {len(state["cuda"])} CUDA generators, '
                             f'this process sees {torch.cuda.device_count()} GPUs')
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants tuples; a loaded state may hold lists instead."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
