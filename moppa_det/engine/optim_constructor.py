"""An optimizer wrapper constructor that sees only the trainable parameters."""
from __future__ import annotations

from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """MMEngine's default constructor, restricted to parameters with ``requires_grad``.

    - Modules without trainable parameters (the frozen timm model) are skipped whole, so
      neither the optimizer nor the log sees the frozen backbone (the default constructor
      warns once per frozen parameter).
    - Parameters of modules marked ``no_weight_decay = True`` (the physical priors' k, c, t and
      source map; the authors' coefficient maps and times; SSF and RLRR scales) never get
      weight decay (decay would pull the priors towards an all-pass filter, and scales towards
      0 instead of 1); ``custom_keys`` still set their ``lr_mult``. ``paramwise_cfg``
      defaults to ``norm_decay_mult=0`` (no decay on norms).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg or dict(norm_decay_mult=0.0))

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: int | float | None = None) -> None:
        if not any(p.requires_grad for p in module.parameters()):
            return
        first_new = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        if getattr(module, 'no_weight_decay', False):
            for group in params[first_new:]:
                group['weight_decay'] = 0.0
