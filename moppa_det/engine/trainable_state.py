"""Removing the frozen backbone weights from a checkpoint (adapter-only checkpoints)."""
from __future__ import annotations

from typing import Any

from ..models.backbones.meta import EXTRA_STATE_KEY, FROZEN_PREFIX, decode_meta

# The state dicts of an MMEngine checkpoint: the model's and, with EMAHook, its average's.
STATE_DICT_KEYS = ('state_dict', 'ema_state_dict')


def frozen_prefixes(state_dict: dict[str, Any]) -> list[str]:
    """Prefixes of the frozen timm weights of every frozen moppa_det backbone in a state dict.

    A MoPPA backbone is recognised by its ``_extra_state`` entry holding 'weights_sha256';
    its frozen weights live under '<backbone prefix>model.'.
    """
    prefixes = []
    for key, value in state_dict.items():
        meta = decode_meta(value) if key.endswith(EXTRA_STATE_KEY) else None
        # A fully fine-tuned backbone (frozen=False) trained its weights: they stay.
        if meta is not None and 'weights_sha256' in meta and meta.get('frozen', True):
            prefixes.append(key[:-len(EXTRA_STATE_KEY)] + FROZEN_PREFIX)
    return prefixes


def strip_frozen_weights(checkpoint: dict[str, Any]) -> int:
    """Removes the frozen backbone weights from the checkpoint's state dicts in place.

    Returns:
        The number of entries removed (over ``state_dict`` and ``ema_state_dict``).
    """
    dropped = 0
    for name in STATE_DICT_KEYS:
        state_dict = checkpoint.get(name)
        if not isinstance(state_dict, dict):
            continue
        prefixes = tuple(frozen_prefixes(state_dict))
        frozen = [key for key in state_dict if prefixes and key.startswith(prefixes)]
        for key in frozen:
            del state_dict[key]
        dropped += len(frozen)
    return dropped
