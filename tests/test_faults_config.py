"""Config mistakes are named by their config key before anything is built."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from mmengine.config import Config

from moppa_det.engine.config_checks import (
    ConfigKeyError,
    accepted_keys,
    check_backbone_weights,
    check_config,
)

DEMO_CONFIG = REPO_ROOT / 'configs/demo/mask_rcnn_vits14_moppa_toy.py'
LEAF_CONFIGS = sorted(p for p in (REPO_ROOT / 'configs').rglob('*.py') if '_base_' not in p.parts)


def demo_config(**options) -> Config:
    cfg = Config.fromfile(str(DEMO_CONFIG))
    cfg.merge_from_dict(options)
    return cfg


@pytest.mark.parametrize('config', LEAF_CONFIGS, ids=lambda p: p.name)
def test_every_config_of_the_repository_passes(config: Path) -> None:
    check_config(Config.fromfile(str(config)))


@pytest.mark.parametrize('key, value, expected', [
    ('model.backbone.nonexistent', 1,
     r"config key model\.backbone\.nonexistent: MoPPAViT takes no 'nonexistent'\. It takes: "),
    ('train_cfg.max_iter', 5,
     r"config key train_cfg\.max_iter: IterBasedTrainLoop takes no 'max_iter'; did you mean "
     r"max_iters"),
    # CheckpointHook passes unknown keys on to Runner.save_checkpoint: MMEngine fails only at
    # the first save.
    ('default_hooks.checkpoint.intervl', 3, r"did you mean interval\?"),
    ('randomness.determinstic', True, r"randomness takes no 'determinstic'; did you mean "
                                      r"deterministic"),
    ('train_dataloader.num_worker', 2, r"train_dataloader\.num_worker: DataLoader takes no"),
    ('train_dataloader.dataset.pipeline.2.keep_ration', True,
     r"train_dataloader\.dataset\.pipeline\[2\]\.keep_ration: Resize takes no"),
    ('optim_wrapper.optimizer.betass', (0.9, 0.99), r"AdamW takes no 'betass'; did you mean betas"),
    ('model.roi_head.mask_head.num_classes', 3,
     r'heads disagree .*bbox_head\.num_classes=4, model\.roi_head\.mask_head\.num_classes=3'),
])
def test_mistakes_are_named_by_key(key: str, value, expected: str) -> None:
    with pytest.raises(ConfigKeyError, match=expected):
        check_config(demo_config(**{key: value}))


def test_heads_must_match_the_dataset_classes() -> None:
    cfg = demo_config(**{'model.roi_head.bbox_head.num_classes': 7,
                         'model.roi_head.mask_head.num_classes': 7})
    with pytest.raises(ConfigKeyError, match=r'num_classes=7 but the training dataset has 4 '
                                             r'classes .*metainfo\.classes.*: disc, box'):
        check_config(cfg)


def test_swallowed_kwargs_are_followed_up_the_class_hierarchy() -> None:
    from mmdet.registry import DATASETS, HOOKS, MODELS, TASK_UTILS
    assert {'ann_file', 'data_prefix', 'pipeline'} <= accepted_keys(DATASETS.get('CocoDataset'))
    assert 'fc_out_channels' in accepted_keys(MODELS.get('Shared2FCBBoxHead'))
    assert 'max_keep_ckpts' in accepted_keys(HOOKS.get('CheckpointHook'))
    assert accepted_keys(TASK_UTILS.get('RandomSampler')) is None  # **kwargs end at object


@pytest.mark.parametrize('content, expected', [
    (b'weights!\n', 'is not a checkpoint'),
    (b'PK\x03\x04', 'truncated or corrupt'),
])
def test_bad_backbone_weights_file_is_named(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / 'vit.pth'
    path.write_bytes(content)
    cfg = demo_config()
    cfg.model.backbone.checkpoint = str(path)
    with pytest.raises(ConfigKeyError, match=f'model.backbone.checkpoint: .*{expected}'):
        check_backbone_weights(cfg)
    cfg.model.backbone.checkpoint = str(tmp_path / 'missing.pth')
    with pytest.raises(ConfigKeyError, match='missing.pth does not exist'):
        check_backbone_weights(cfg)


def test_truncated_safetensors_weights_are_named(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    path = tmp_path / 'vit.safetensors'
    save_file({'w': torch.zeros(1000)}, str(path))
    cfg = demo_config()
    cfg.model.backbone.checkpoint = str(path)
    check_backbone_weights(cfg)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ConfigKeyError, match='vit.safetensors is truncated'):
        check_backbone_weights(cfg)
    path.write_text(json.dumps({'not': 'safetensors'}))
    with pytest.raises(ConfigKeyError, match='is not a safetensors file'):
        check_backbone_weights(cfg)


def test_train_tool_names_the_key_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, 'tools/train.py', str(DEMO_CONFIG), '--work-dir', str(tmp_path / 'w'),
         '--cfg-options', 'model.backbone.nonexistent=1'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        'ConfigKeyError: config key model.backbone.nonexistent: MoPPAViT takes no')
    assert 'Traceback' not in result.stderr
    assert not (tmp_path / 'w').exists()
