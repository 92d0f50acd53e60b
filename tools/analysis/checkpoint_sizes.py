"""Measures the size of a full and of a trainable-only checkpoint for a config's model.

Builds the model (random weights: the size does not depend on them), takes one AdamW step on
a small random batch so the optimizer holds its state, then writes both kinds of checkpoint
({state_dict, optimizer, meta}) to a temporary directory and prints their sizes.

Usage: python tools/analysis/checkpoint_sizes.py configs/mask_rcnn_vit_moppa.py
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def measure(config: str, image_side: int = 224) -> dict[str, int]:
    """Returns bytes of 'full', 'trainable_only' (both with optimizer state) and
    'trainable_weights' (no optimizer: what one would publish), and 'frozen_entries'."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    import moppa_det  # noqa: F401
    from moppa_det.engine import strip_frozen_weights

    register_all_modules()
    cfg = Config.fromfile(config)
    cfg.model.backbone.update(pretrained=False, checkpoint=None)
    model = MODELS.build(cfg.model)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    num_classes = cfg.model.roi_head.bbox_head.num_classes
    packed = demo_mm_inputs(1, (3, image_side, image_side), num_classes=num_classes,
                            with_mask=True)
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model.loss(data['inputs'], data['data_samples']))
    optim.update_params(loss)
    full = dict(state_dict=model.state_dict(), optimizer=optim.state_dict(),
                meta=dict(config=config))
    trainable = copy.copy(full)
    trainable['state_dict'] = dict(full['state_dict'])
    dropped = strip_frozen_weights(trainable)
    weights = dict(state_dict=trainable['state_dict'], meta=full['meta'])
    sizes = dict(frozen_entries=dropped,
                 trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                 all_params=sum(p.numel() for p in model.parameters()))
    with tempfile.TemporaryDirectory() as tmp:
        for name, checkpoint in (('full', full), ('trainable_only', trainable),
                                 ('trainable_weights', weights)):
            path = Path(tmp) / f'{name}.pth'
            torch.save(checkpoint, path)
            sizes[name] = path.stat().st_size
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    args = parser.parse_args(argv)
    sizes = measure(args.config)
    mib = 2 ** 20
    print(f'{args.config}: {sizes["trainable_params"]:,} trainable of {sizes["all_params"]:,} '
          'parameters')
    print(f'  full checkpoint (weights + AdamW state): {sizes["full"] / mib:.1f} MiB')
    print(f'  trainable-only checkpoint (+ AdamW state): {sizes["trainable_only"] / mib:.1f} MiB '
          f'({sizes["frozen_entries"]} frozen entries dropped)')
    print(f'  trainable weights alone (no optimizer): {sizes["trainable_weights"] / mib:.1f} MiB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
