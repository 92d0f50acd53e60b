"""Saves checkpoints that hold only what was trained (plus the frozen backbone's identity)."""
from __future__ import annotations

from mmdet.registry import HOOKS
from mmengine.hooks import Hook

from ..trainable_state import strip_frozen_weights


@HOOKS.register_module()
class TrainableCheckpointHook(Hook):
    """Drops the frozen backbone weights from every checkpoint the runner saves.

    The units, neck, heads, optimizer, schedulers and message hub stay; the backbone's
    ``_extra_state`` (model name, sha256 of its weights) stays too, so loading checks that the
    config builds the same frozen weights before filling them in (see ``TimmAdapterBackbone``).
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        dropped = strip_frozen_weights(checkpoint)
        checkpoint.setdefault('meta', {})['moppa_frozen_weights_dropped'] = dropped
