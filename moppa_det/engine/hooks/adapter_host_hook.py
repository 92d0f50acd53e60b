"""Connects any detector to its backbone's adapters when a run starts."""
from __future__ import annotations

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from ...models.detectors import attach_adapter_hooks, check_neck_fits_backbone
from ..parameter_report import unwrap


@HOOKS.register_module()
class AdapterHostHook(Hook):
    """Installs :func:`attach_adapter_hooks` on the runner's model before training, validation
    or testing: each image's valid size reaches the backbone, and the adapters' auxiliary losses
    reach the loss dict, whatever the detector type. Also checks that the neck fits the backbone.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = unwrap(runner.model)
        if attach_adapter_hooks(model):
            check_neck_fits_backbone(model.backbone, getattr(model, 'neck', None))
