"""Choosing the autocast dtype of a backbone, including 'auto': bfloat16 where it is native.

On CPUs bfloat16 pays only with native instructions (AVX512-BF16, AMX): there the frozen ViT-S
ran 2.0x faster than in float32 (tools/analysis/benchmark_backbone_dtype.py), while on an
AVX2-only CPU the same forward + backward took 20x longer in bfloat16 (emulated) than in
float32.
"""
from __future__ import annotations

from functools import lru_cache

import torch

AUTOCAST_CHOICES = (None, 'auto', 'bfloat16', 'float16')
_NATIVE_BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')


@lru_cache(maxsize=4)
def cpu_has_native_bf16(cpuinfo: str = '/proc/cpuinfo') -> bool:
    """True when ``cpuinfo`` lists AVX512-BF16 or AMX-BF16 (False where it cannot be read)."""
    try:
        with open(cpuinfo) as file:
            flags = set(file.read().split())
    except OSError:
        return False
    return any(flag in flags for flag in _NATIVE_BF16_CPU_FLAGS)


def check_autocast_dtype(value: str | None) -> None:
    """Raises ``ValueError`` naming the field for a value outside ``AUTOCAST_CHOICES``."""
    if value not in AUTOCAST_CHOICES:
        raise ValueError(f'model.backbone.autocast_dtype={value!r}: use None, \'auto\' '
                         "(bfloat16 where the hardware has it natively), 'bfloat16' or 'float16'")


def resolve_autocast_dtype(value: str | torch.dtype | None,
                           device_type: str) -> torch.dtype | None:
    """The dtype to autocast to on ``device_type``; None: run in float32."""
    if value is None or isinstance(value, torch.dtype):
        return value
    if value != 'auto':
        return getattr(torch, value)
    if device_type == 'cuda':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device_type == 'cpu':
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None
