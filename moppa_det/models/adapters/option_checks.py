"""Validation of adapter options; every error names the option and the value given."""
from __future__ import annotations

import difflib
from typing import Any, Sequence

from .base import LINEAR_ROLES


def check_positive_int(name: str, value: Any) -> None:
    """``value`` is an int >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name}={value!r} must be an integer >= 1')


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """``value`` is a real number in the given interval (open where ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'{name}={value!r} must be a number')
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = '(' if low_open else '['
        right = ')' if high_open else ']'
        raise ValueError(f'{name}={value!r} must be in {left}{low if low is not None else "-inf"}'
                         f', {high if high is not None else "inf"}{right}')


def check_dropout(name: str, value: Any) -> None:
    """A dropout probability in [0, 1)."""
    check_number(name, value, 0.0, 1.0, high_open=True)


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f'{name}={value!r} must be True or False')


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``; the error suggests the closest one."""
    if value not in choices:
        close = difflib.get_close_matches(str(value), list(choices), n=1)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        raise ValueError(f'{name}={value!r} is not one of {tuple(choices)}.{hint}')


def as_roles(name: str, value: Any) -> tuple[str, ...]:
    """Linear-layer roles ('qkv', 'proj', 'fc1', 'fc2') as a tuple: one string or a sequence,
    non-empty, known, without repeats."""
    roles = (value,) if isinstance(value, str) else value
    if not isinstance(roles, (list, tuple)) or not roles:
        raise ValueError(f'{name}={value!r} must name at least one of {LINEAR_ROLES}')
    for role in roles:
        check_choice(name, role, LINEAR_ROLES)
    if len(set(roles)) != len(roles):
        raise ValueError(f'{name}={value!r} names a layer twice')
    return tuple(roles)
