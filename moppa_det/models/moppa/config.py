"""The configuration of a MoPPA unit and of its route regularization, validated on creation.

Every design choice METHOD.md marks as ours is a field here, so ablations are config changes.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any

from ...ops import POISSON_MODES, PRIOR_NAMES, RESIZE_MODES, SOURCE_MODES

ROUTER_MODES = ('token', 'sample', 'uniform')
PLACEMENTS = ('after_norm', 'before_norm')
ACTIVATIONS = ('none', 'gelu')
ROUTE_REG_KINDS = ('l2', 'entropy', 'kl')


def _from_mapping(cls: type, options: dict[str, Any] | None, label: str) -> Any:
    """Builds dataclass ``cls`` from a mapping, naming an unknown key and the closest known one."""
    options = dict(options or {})
    known = [f.name for f in dataclasses.fields(cls)]
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f' Did you mean {close[0]!r}?' if close else ''
            raise ValueError(f'{label}: unknown key {key!r}.{hint} Known keys: {", ".join(known)}.')
    return cls(**options)


def _check_choice(name: str, value: Any, choices: tuple[str, ...],
                  label: str = 'MoPPA config') -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f' Did you mean {close[0]!r}?' if close else ''
        raise ValueError(f'{label}: {name}={value!r} is not one of {choices}.{hint}')


@dataclass(frozen=True)
class MoPPAConfig:
    """Options of one MoPPA unit.

    Attributes:
        priors: Subset of ('heat', 'wave', 'poisson'), in mixing order.
        bottleneck: Width r of the down-projection; ``None`` applies the priors per channel on
            all D channels with a zero-init per-channel output scale instead.
        activation: 'none' or 'gelu' after the down-projection.
        router: 'token' (alpha per token), 'sample' (alpha from pooled tokens) or 'uniform'.
        placement: 'after_norm' (attention sees a + s*Delta(a), a = norm1(x); the default) or
            'before_norm' (attention sees norm1(x + s*Delta(x)); the skip path keeps x).
        scale: Factor s of the unit's output.
        init_kt: Initial k*t of the heat prior.
        init_ct: Initial c*t of the wave prior.
        init_t: Initial diffusion time t.
        poisson: 'screened' (mu / (lambda + mu)) or 'literal' (1 / lambda, DC passed).
        source: 'multiply' (F = S * z) or 'add' (F = z + S).
        source_size: Stored size (h, w) of the source map S.
        source_resize: 'bilinear' or 'bicubic' resizing of S to the runtime grid.
    """
    priors: tuple[str, ...] = PRIOR_NAMES
    bottleneck: int | None = 8
    activation: str = 'none'
    router: str = 'token'
    placement: str = 'after_norm'
    scale: float = 1.0
    init_kt: float = 0.1
    init_ct: float = 0.5
    init_t: float = 1.0
    poisson: str = 'screened'
    source: str = 'multiply'
    source_size: tuple[int, int] = (14, 14)
    source_resize: str = 'bilinear'

    def __post_init__(self) -> None:
        object.__setattr__(self, 'priors', tuple(self.priors))
        object.__setattr__(self, 'source_size', tuple(self.source_size))
        if not self.priors:
            raise ValueError('MoPPA config: priors must name at least one prior.')
        for prior in self.priors:
            _check_choice('priors', prior, PRIOR_NAMES)
        if len(set(self.priors)) != len(self.priors):
            raise ValueError(f'MoPPA config: priors={self.priors} names a prior twice.')
        if self.bottleneck is not None and (not isinstance(self.bottleneck, int)
                                            or self.bottleneck < 1):
            raise ValueError(f'MoPPA config: bottleneck={self.bottleneck!r} must be an integer '
                             '>= 1, or None for the per-channel variant.')
        _check_choice('activation', self.activation, ACTIVATIONS)
        _check_choice('router', self.router, ROUTER_MODES)
        _check_choice('placement', self.placement, PLACEMENTS)
        _check_choice('poisson', self.poisson, POISSON_MODES)
        _check_choice('source', self.source, SOURCE_MODES)
        _check_choice('source_resize', self.source_resize, RESIZE_MODES)
        for name in ('init_kt', 'init_ct', 'init_t'):
            if not getattr(self, name) > 0:
                raise ValueError(f'MoPPA config: {name}={getattr(self, name)!r} must be > 0.')
        if len(self.source_size) != 2 or min(self.source_size) < 1:
            raise ValueError(f'MoPPA config: source_size={self.source_size!r} must be (h, w) '
                             'with h, w >= 1.')

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None,
                  label: str = 'MoPPA config') -> 'MoPPAConfig':
        """Builds a config from a mapping (e.g. an MMEngine ``ConfigDict``).

        Args:
            options: The fields to set.
            label: Where the mapping comes from, for error messages.

        Raises:
            ValueError: on an unknown key or value, naming it and the closest known one.
        """
        try:
            return _from_mapping(cls, options, label)
        except ValueError as error:
            message = str(error)
            if not message.startswith(label):
                message = message.replace('MoPPA config', label, 1)
            raise ValueError(message) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RouteRegConfig:
    """Route regularization: keeps the mean routing close to uniform early in training.

    Attributes:
        kind: 'l2' (sum_i (mean alpha_i - 1/P)^2), 'entropy' (log P - H(mean alpha), which
            equals KL(mean alpha || uniform): METHOD.md's entropy and KL options coincide) or
            'kl' (the reverse KL(uniform || mean alpha), unbounded as a prior dies); all are 0
            at uniform routing.
        weight: lambda_route.
        decay_fraction: If set, lambda_route decays linearly to 0 over this fraction of the
            training iterations (0.5: the first half); ``None`` keeps it constant.
    """
    kind: str = 'l2'
    weight: float = 0.01
    decay_fraction: float | None = None

    def __post_init__(self) -> None:
        _check_choice('kind', self.kind, ROUTE_REG_KINDS, label='model.route_reg')
        if self.weight < 0:
            raise ValueError(f'model.route_reg.weight={self.weight!r} must be >= 0.')
        if self.decay_fraction is not None and not 0 < self.decay_fraction <= 1:
            raise ValueError(f'model.route_reg.decay_fraction={self.decay_fraction!r} must be in '
                             '(0, 1] or None.')

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None,
                  label: str = 'model.route_reg') -> 'RouteRegConfig':
        """Builds a config from a mapping; an unknown key raises ``ValueError`` naming it."""
        return _from_mapping(cls, options, label)


__all__ = ['MoPPAConfig', 'RouteRegConfig', 'ROUTER_MODES', 'PLACEMENTS', 'ACTIVATIONS',
           'ROUTE_REG_KINDS']
