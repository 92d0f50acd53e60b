"""Route regularization: a penalty on the batch-mean routing of every unit being far from uniform.

With m the mean alpha of one unit over batch and tokens (shape (P,)) and u = 1/P:
- 'l2':      sum_i (m_i - u)^2                 (the default)
- 'entropy': log P - H(m)  = KL(m || uniform)
- 'kl':      KL(uniform || m) = -log P - mean_i log m_i  (grows without bound as a prior dies)
Each is 0 at uniform routing; the loss is their mean over units.
"""
from __future__ import annotations

import math

import torch

_EPS = 1e-8


def route_penalty(mean_alpha: torch.Tensor, kind: str = 'l2') -> torch.Tensor:
    """Penalty of mean routings.

    Args:
        mean_alpha: Tensor of shape (U, P): the mean alpha of each of U units.
        kind: 'l2', 'entropy' or 'kl'.

    Returns:
        Scalar tensor, the mean penalty over units.
    """
    num_priors = mean_alpha.shape[-1]
    if kind == 'l2':
        per_unit = ((mean_alpha - 1.0 / num_priors) ** 2).sum(-1)
    elif kind == 'entropy':
        entropy = -(mean_alpha * (mean_alpha + _EPS).log()).sum(-1)
        per_unit = math.log(num_priors) - entropy
    elif kind == 'kl':
        per_unit = -math.log(num_priors) - (mean_alpha + _EPS).log().mean(-1)
    else:
        raise ValueError(f'unknown route regularization kind {kind!r}')
    return per_unit.mean()


def decayed_weight(weight: float, decay_fraction: float | None, progress: float) -> float:
    """lambda_route at a point of training.

    Args:
        weight: The initial lambda_route.
        decay_fraction: Fraction of training over which lambda decays linearly to 0, or None.
        progress: Fraction of training done, in [0, 1].

    Returns:
        The weight to use now.
    """
    if decay_fraction is None:
        return weight
    return weight * max(0.0, 1.0 - progress / decay_fraction)
