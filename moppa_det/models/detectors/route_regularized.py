"""Adds the MoPPA units' route regularization and routing statistics to a detector's losses."""
from __future__ import annotations

from typing import Any

import torch
from mmengine.logging import MessageHub

from ..moppa import RouteRegConfig, decayed_weight, route_penalty


def training_progress() -> float:
    """Fraction of training done, from the runner's MessageHub (0 outside a training loop)."""
    hub = MessageHub.get_current_instance()
    max_iters = hub.get_info('max_iters')
    if not max_iters:
        return 0.0
    return min(1.0, hub.get_info('iter', 0) / max_iters)


def check_neck_fits_backbone(backbone: torch.nn.Module, neck: torch.nn.Module | None) -> None:
    """Raises ``ValueError`` when the neck's ``in_channels`` differ from the backbone's outputs.

    The backbones declare ``out_channels``; catching a mismatch here names the config fields at
    fault instead of failing later inside a convolution.
    """
    declared = getattr(backbone, 'out_channels', None)
    expected = getattr(neck, 'in_channels', None)
    if declared is None or expected is None:
        return
    fits = expected == declared[-1] if isinstance(expected, int) else list(expected) == declared
    if not fits:
        raise ValueError(f'model.neck.in_channels={expected} does not match the outputs of '
                         f'model.backbone ({getattr(backbone, "model_name", "?")}): '
                         f'out_channels={declared}')


class RouteRegularizedMixin:
    """Mixin for MMDetection detectors whose backbone has MoPPA units.

    ``route_loss_terms()`` returns ``loss_route`` (lambda_route * penalty of the mean routing,
    with lambda_route optionally decaying) and, for logging only, the mean alpha of every prior
    in every unit and the mean per-token routing entropy; their keys hold no 'loss', so MMEngine
    does not add them to the total loss.
    """

    route_reg: RouteRegConfig

    def init_route_reg(self, route_reg: dict[str, Any] | None) -> None:
        self.route_reg = RouteRegConfig.from_dict(route_reg)

    def route_loss_terms(self) -> dict[str, torch.Tensor]:
        statistics_of = getattr(self.backbone, 'route_statistics', None)
        statistics = statistics_of() if statistics_of is not None else {}
        if not statistics:
            return {}
        mean_alpha = torch.stack([s['mean_alpha'] for s in statistics.values()])  # (U, P)
        weight = decayed_weight(self.route_reg.weight, self.route_reg.decay_fraction,
                                training_progress())
        terms = {'loss_route': weight * route_penalty(mean_alpha, self.route_reg.kind)}
        priors = self.backbone.unit_config.priors
        for name, unit_stats in statistics.items():
            for prior, value in zip(priors, unit_stats['mean_alpha'].detach()):
                terms[f'route_u{name}_{prior}'] = value
        entropies = torch.stack([s['entropy'] for s in statistics.values()])
        terms['route_entropy'] = entropies.mean()
        return terms
