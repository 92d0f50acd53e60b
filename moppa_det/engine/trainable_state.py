"""Removing the frozen backbone weights from a checkpoint (adapter-only checkpoints)."""
from __future__ import annotations

from typing import Any

from ..models.backbones.meta import decode_meta

EXTRA_STATE = '_extra_state'


def frozen_prefixes(state_dict: dict[str, Any]) -> list[str]:
    """Prefixes of the frozen timm weights of every MoPPA backbone in a state dict.

    A MoPPA backbone is recognised by its ``_extra_state`` entry holding 'weights_sha256';
    its frozen weights live under '<backbone prefix>model.'.
    """
    prefixes = []
    for key, value in state_dict.items():
        meta = decode_meta(value) if key.endswith(EXTRA_STATE) else None
        if meta is not None and 'weights_sha256' in meta:
            prefixes.append(key[:-len(EXTRA_STATE)] + 'model.')
    return prefixes


def strip_frozen_weights(checkpoint: dict[str, Any]) -> int:
    """Removes the frozen backbone weights from ``checkpoint['state_dict']`` in place.

    Returns:
        The number of entries removed.
    """
    state_dict = checkpoint['state_dict']
    prefixes = tuple(frozen_prefixes(state_dict))
    if not prefixes:
        return 0
    frozen = [key for key in state_dict if key.startswith(prefixes)]
    for key in frozen:
        del state_dict[key]
    return len(frozen)
