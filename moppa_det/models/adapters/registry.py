"""The registry of adapter types and building adapters from configs."""
from __future__ import annotations

import difflib
from typing import Any

from mmengine.registry import Registry

from .base import Adapter, AdapterHost, BlockSite

ADAPTERS = Registry('adapter')


def adapter_class(type_name: Any, label: str) -> type[Adapter]:
    """The registered adapter class of ``type_name``; a ValueError names close ones."""
    cls = ADAPTERS.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        known = sorted(ADAPTERS.module_dict)
        close = difflib.get_close_matches(str(type_name), known, n=1)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        raise ValueError(f'{label}: unknown adapter type {type_name!r}.{hint} '
                         f'Known types: {", ".join(known)}.')
    return cls


def normalise_specs(adapter: Any) -> list[dict[str, Any]]:
    """One adapter config or a list of them -> a list of plain dicts (None -> [])."""
    if adapter is None:
        return []
    specs = [adapter] if isinstance(adapter, dict) else list(adapter)
    for spec in specs:
        if not isinstance(spec, dict) or 'type' not in spec:
            raise ValueError(f'model.backbone.adapter: each adapter is a dict with a "type" '
                             f'key, got {spec!r}')
    return [dict(spec) for spec in specs]


def build_adapter(spec: dict[str, Any], host: AdapterHost, sites: list[BlockSite],
                  label: str) -> Adapter:
    """Builds one adapter from ``dict(type=..., **options)`` for ``sites``."""
    options = dict(spec)
    cls = adapter_class(options.pop('type'), label)
    return cls(cls.parse_options(options, f'{label} ({cls.__name__})'), host, sites)
