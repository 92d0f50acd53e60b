"""Connecting any MMDetection detector to its backbone's adapters, without a subclass.

Two forward hooks on the detector:
- before every forward, each data sample's ``img_shape`` (the image before batch padding)
  goes to the backbone, so spectral adapters filter each image on its own valid grid;
- after a ``mode='loss'`` forward, the adapters' auxiliary losses and statistics
  (``backbone.auxiliary_losses()``) are added to the loss dict.
Hooks run when the detector is called (``model(...)``, as MMEngine's ``train_step``,
``val_step`` and ``test_step`` do), not on a direct ``model.forward(...)``.
``attach_adapter_hooks`` installs them; the ``AdapterHostHook`` of ``moppa_det.engine`` calls it
when a run starts, so ``tools/train.py`` / ``tools/test.py`` configs can use any detector type
(MaskRCNN, CascadeRCNN, ...). Outside a runner (``mmdet.apis.init_detector``), call it
yourself; without it every input pixel counts as valid and no auxiliary loss is added.
"""
from __future__ import annotations

from typing import Any

from torch import nn

_FLAG = '_moppa_adapter_hooks'


def attach_adapter_hooks(detector: nn.Module) -> bool:
    """Installs the two hooks on ``detector`` once.

    Args:
        detector: An MMDetection detector (unwrapped from DDP).

    Returns:
        True when the detector's backbone hosts adapters (hooks installed now or before).
    """
    backbone = getattr(detector, 'backbone', None)
    if not hasattr(backbone, 'set_image_sizes'):
        return False
    if not getattr(detector, _FLAG, False):
        detector.register_forward_pre_hook(_pass_image_sizes, with_kwargs=True)
        detector.register_forward_hook(_add_auxiliary_losses, with_kwargs=True)
        setattr(detector, _FLAG, True)
    return True


def image_sizes(data_samples: Any) -> list[tuple[int, int]] | None:
    """(h, w) of every sample's ``img_shape``; None when a sample has none."""
    if not data_samples:
        return None
    sizes = []
    for sample in data_samples:
        shape = getattr(sample, 'metainfo', {}).get('img_shape')
        if shape is None:
            return None
        sizes.append((int(shape[0]), int(shape[1])))
    return sizes


def _pass_image_sizes(detector: nn.Module, args: tuple, kwargs: dict) -> None:
    data_samples = kwargs.get('data_samples', args[1] if len(args) > 1 else None)
    detector.backbone.set_image_sizes(image_sizes(data_samples))


def _add_auxiliary_losses(detector: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    mode = kwargs.get('mode', args[2] if len(args) > 2 else 'tensor')
    if mode == 'loss' and isinstance(output, dict):
        for key, value in detector.backbone.auxiliary_losses().items():
            if key in output:
                raise ValueError(f'the adapters report {key!r}, which the detector reports too')
            output[key] = value
    return output


__all__ = ['attach_adapter_hooks', 'image_sizes']
