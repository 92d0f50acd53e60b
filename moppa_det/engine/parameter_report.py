"""Counting parameters by group, PEFT style: 'trainable params: N || all params: M || trainable%: P'."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP/FSDP-style wrapper (``.module``), or the model itself."""
    return getattr(model, 'module', model)


def parameter_groups(model: nn.Module) -> 'OrderedDict[str, list[nn.Parameter]]':
    """Splits a detector's parameters by module structure.

    Groups: 'backbone (frozen)', 'MoPPA units' (``backbone.units``), 'backbone (other
    trainable)', 'neck', 'heads' (everything else: RPN, RoI heads, ...).
    """
    model = unwrap(model)
    groups: OrderedDict[str, list[nn.Parameter]] = OrderedDict(
        (name, []) for name in ('backbone (frozen)', 'MoPPA units', 'backbone (other trainable)',
                                'neck', 'heads'))
    backbone = getattr(model, 'backbone', None)
    units = getattr(backbone, 'units', None)
    unit_ids = {id(p) for p in units.parameters()} if units is not None else set()
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    neck = getattr(model, 'neck', None)
    neck_ids = {id(p) for p in neck.parameters()} if neck is not None else set()
    for param in model.parameters():
        if id(param) in unit_ids:
            groups['MoPPA units'].append(param)
        elif id(param) in backbone_ids:
            key = 'backbone (other trainable)' if param.requires_grad else 'backbone (frozen)'
            groups[key].append(param)
        elif id(param) in neck_ids:
            groups['neck'].append(param)
        else:
            groups['heads'].append(param)
    return groups


def count(params: list[nn.Parameter], trainable_only: bool = False) -> int:
    return sum(p.numel() for p in params if p.requires_grad or not trainable_only)


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
