"""The backbone identity stored in state dicts, encoded as a tensor.

State-dict walkers such as MMEngine's broadcast of the initial weights under DDP accept only
tensors, so the meta (model name, sha256 of the frozen weights, unit config) travels as the
UTF-8 bytes of its JSON in a uint8 tensor.
"""
from __future__ import annotations

import json
from typing import Any

import torch

# Where a MoPPA backbone keeps its identity and its frozen timm weights, relative to its own
# prefix in a state dict.
EXTRA_STATE_KEY = '_extra_state'
FROZEN_PREFIX = 'model.'


def encode_meta(meta: dict[str, Any]) -> torch.Tensor:
    """A JSON-serialisable dict -> a 1-D uint8 tensor."""
    data = json.dumps(meta, sort_keys=True).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def decode_meta(value: Any) -> dict[str, Any] | None:
    """The dict of :func:`encode_meta` (a plain dict is accepted as is); None if not a meta."""
    if isinstance(value, dict):
        return value
    if isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1:
        try:
            meta = json.loads(bytes(value.tolist()).decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        return meta if isinstance(meta, dict) else None
    return None
