"""The backbone identity stored in state dicts, and comparing it with a configured backbone.

State-dict walkers such as MMEngine's broadcast of the initial weights under DDP accept only
tensors, so the meta (model name, sha256 of the pre-trained weights, frozen or not, adapters)
travels as the UTF-8 bytes of its JSON in a uint8 tensor.

Version 1 (the first release) held ``moppa`` (the unit options or None) instead of ``adapters``
and kept the units under ``units.``; such checkpoints still load.
"""
from __future__ import annotations

import json
from typing import Any

import torch

# Where a backbone keeps its identity and its pre-trained timm weights, relative to its own
# prefix in a state dict.
EXTRA_STATE_KEY = '_extra_state'
FROZEN_PREFIX = 'model.'


class BackboneCheckpointMismatch(ValueError):
    """A checkpoint was made for another backbone; the message says what differs."""


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


def read_meta(value: Any, key: str) -> dict[str, Any]:
    """Decodes a stored meta; one that cannot be read is an error, not a skipped check.

    Raises:
        BackboneCheckpointMismatch: naming the key and what it holds instead.
    """
    meta = decode_meta(value)
    if meta is None:
        what = (f'a {value.dtype} tensor of shape {tuple(value.shape)}'
                if isinstance(value, torch.Tensor) else type(value).__name__)
        raise BackboneCheckpointMismatch(
            f'{key} holds {what}, not the backbone identity (a uint8 JSON tensor): was the '
            'state dict cast to another dtype (e.g. .half() for publishing)? Cast only the '
            'floating-point entries.')
    return meta


def adapters_of_meta(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The adapter descriptions of a meta of any version (blocks None where unknown)."""
    if 'adapters' in meta:
        return list(meta['adapters'])
    moppa = meta.get('moppa')
    return [] if moppa is None else [dict(type='MoPPA', options=moppa, blocks=None)]


def rename_v1_keys(state_dict: dict[str, Any], prefix: str) -> None:
    """Moves version-1 unit weights (``units.N.*``) to ``adapters.moppa.units.N.*``, in place."""
    old = prefix + 'units.'
    for key in [key for key in state_dict if key.startswith(old)]:
        state_dict[prefix + 'adapters.moppa.units.' + key[len(old):]] = state_dict.pop(key)


def compare_adapters(stored: list[dict[str, Any]], built: list[dict[str, Any]],
                     training_options: dict[str, tuple[str, ...]]) -> str:
    """What differs between a checkpoint's adapters and the configured ones ('' if nothing).

    Args:
        stored: Adapter descriptions of the checkpoint (type, options, blocks).
        built: Those of the configured backbone.
        training_options: Per adapter type, options that do not change what the weights mean
            (e.g. the route-loss weight); they are not compared.
    """
    stored_types = [entry['type'] for entry in stored]
    built_types = [entry['type'] for entry in built]
    if sorted(stored_types) != sorted(built_types):
        return (f'the checkpoint has adapters {stored_types or "none"}, the config builds '
                f'{built_types or "none"}')
    built_by_type = {entry['type']: entry for entry in built}
    for entry in stored:
        ours = built_by_type[entry['type']]
        ignored = set(training_options.get(entry['type'], ()))
        for option in sorted(set(entry['options']) | set(ours['options'])):
            theirs_value = entry['options'].get(option, '<absent>')
            ours_value = ours['options'].get(option, '<absent>')
            if option not in ignored and _canonical(theirs_value) != _canonical(ours_value):
                return (f'{entry["type"]} option {option!r} is {theirs_value!r} in the '
                        f'checkpoint, {ours_value!r} in the config')
        if entry.get('blocks') is not None and list(entry['blocks']) != list(ours['blocks']):
            return (f'{entry["type"]} sits in blocks {list(entry["blocks"])} in the checkpoint, '
                    f'{list(ours["blocks"])} in the config')
    return ''


def _canonical(value: Any) -> Any:
    """Tuples and lists compare equal (JSON keeps only lists)."""
    return json.loads(json.dumps(value))
