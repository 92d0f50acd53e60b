"""Counting parameters by group, PEFT style:
'trainable params: N || all params: M || trainable%: P'.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP/FSDP-style wrapper (``.module``), or the model itself."""
    return getattr(model, 'module', model)


def parameter_groups(model: nn.Module) -> 'OrderedDict[str, list[nn.Parameter]]':
    """Splits a detector's parameters by module structure.

    Groups: 'backbone (pre-trained)' (the timm model, frozen or fine-tuned), one
    'adapter: <Type>' per adapter of the backbone, 'backbone (other)', 'neck', 'heads'
    (everything else: RPN, RoI heads, ...).
    """
    model = unwrap(model)
    groups: OrderedDict[str, list[nn.Parameter]] = OrderedDict()
    owner: dict[int, str] = {}
    backbone = getattr(model, 'backbone', None)
    timm_model = getattr(backbone, 'model', None)
    for module, name in [(timm_model, 'backbone (pre-trained)')] + [
            (adapter, f'adapter: {type(adapter).__name__}')
            for adapter in getattr(backbone, 'adapters', {}).values()] + [
            (backbone, 'backbone (other)'), (getattr(model, 'neck', None), 'neck')]:
        groups[name] = []
        if module is not None:
            for param in module.parameters():
                owner.setdefault(id(param), name)
    groups['heads'] = []
    for param in model.parameters():
        groups[owner.get(id(param), 'heads')].append(param)
    return groups


def count(params: list[nn.Parameter], trainable_only: bool = False) -> int:
    return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


def trainable_backbone_parameters(model: nn.Module) -> int:
    """Trainable parameters of the backbone (adapters, or all of it when fine-tuned)."""
    backbone = getattr(unwrap(model), 'backbone', None)
    return 0 if backbone is None else count(list(backbone.parameters()), trainable_only=True)


def trainable_summary(model: nn.Module) -> str:
    """One line: 'trainable params: N || all params: M || trainable%: P'."""
    params = list(unwrap(model).parameters())
    trainable, total = count(params, trainable_only=True), count(params)
    return (f'trainable params: {trainable:,} || all params: {total:,} || '
            f'trainable%: {100.0 * trainable / max(total, 1):.4f}')


def parameter_table(model: nn.Module) -> str:
    """A table of total and trainable parameters per group, then the summary line."""
    rows = [('group', 'params', 'trainable')]
    for name, params in parameter_groups(model).items():
        if params:
            rows.append((name, f'{count(params):,}', f'{count(params, True):,}'))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ['  '.join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                       for i, cell in enumerate(row)) for row in rows]
    return '\n'.join(lines + [trainable_summary(model)])
