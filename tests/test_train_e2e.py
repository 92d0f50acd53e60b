"""End to end on the CPU: train + COCO evaluation through the real tools on a generated set.

- tools/train.py on a tiny frozen MoPPA ViT: trainable-only checkpoint, COCO box/mask metrics;
  tools/test.py evaluates that checkpoint, and refuses it when the backbone weights differ;
- tools/dist_train.sh with two gloo processes: loss decreases, both ranks end with identical
  trainable parameters, one checkpoint is written.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_VIT

from moppa_det.models.backbones import MoPPAViT
from tools.data.make_toy_coco import make_dataset

DEMO_CONFIG = REPO_ROOT / 'configs/demo/mask_rcnn_vits14_moppa_toy.py'


def write_config(path: Path, data_root: Path, weights: Path, max_iters: int, lr: float) -> Path:
    """A leaf config over the demo config: tiny backbone from ``weights``, tiny schedule."""
    backbone = dict(TINY_VIT, checkpoint=str(weights), adapter_blocks=None)
    path.write_text(f"""
_base_ = ['{DEMO_CONFIG}']
custom_imports = dict(imports=['moppa_det', 'dist_check_hook'], allow_failed_imports=False)
data_root = '{data_root}/'
# score_thr 0: a few iterations in, scores are low; CocoMetric skips an empty result set.
model = dict(backbone={backbone!r}, neck=dict(in_channels=32),
             test_cfg=dict(rcnn=dict(score_thr=0.0)))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_iters={max_iters}, val_interval={max_iters})
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
optim_wrapper = dict(optimizer=dict(lr={lr}))
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval={max_iters}))
custom_hooks = [dict(type='AdapterHostHook'), dict(type='ParameterReportHook'),
                dict(type='TrainableCheckpointHook'), dict(type='DumpTrainableParamsHook')]
log_processor = dict(window_size=1)
randomness = dict(seed=0)
""")
    return path


@pytest.fixture(scope='module')
def toy_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('e2e')
    data_root = make_dataset(root / 'toy_coco', num_train=8, num_val=4, img_size=128, seed=1)
    torch.manual_seed(0)
    weights = root / 'tiny_vit.pth'
    torch.save(MoPPAViT(**TINY_VIT, moppa=None).model.state_dict(), weights)
    return root, Path(data_root), weights


def child_env() -> dict[str, str]:
    paths = [str(REPO_ROOT), str(REPO_ROOT / 'tests'), os.environ.get('PYTHONPATH', '')]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)),
                OMP_NUM_THREADS='1', PYTHON=sys.executable)


def run_tool(*command: str, timeout: float = 400) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=REPO_ROOT, env=child_env(), capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def scalars(work_dir: Path) -> list[dict]:
    files = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert files, f'no scalars under {work_dir}'
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_train_evaluate_and_test_adapter_only_checkpoint(toy_setup):
    root, data_root, weights = toy_setup
    config = write_config(root / 'single.py', data_root, weights, max_iters=4, lr=1e-3)
    work_dir = root / 'single'
    run_tool(sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir))
    records = scalars(work_dir)
    metrics = [r for r in records if 'coco/bbox_mAP' in r]
    assert metrics and 'coco/segm_mAP' in metrics[-1]
    assert any('loss_route' in r and 'route_u0_heat' in r for r in records)
    checkpoint = work_dir / 'iter_4.pth'
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    assert not any(k.startswith('backbone.model.') for k in state)
    assert any(k.startswith('backbone.adapters.') for k in state)

    # --resume continues from the trainable-only checkpoint.
    run_tool(sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir),
             '--resume', '--cfg-options', 'train_cfg.max_iters=6', 'train_cfg.val_interval=6',
             'default_hooks.checkpoint.interval=6')
    assert (work_dir / 'iter_6.pth').is_file()
    resumed = torch.load(work_dir / 'iter_6.pth', map_location='cpu', weights_only=False)
    assert resumed['meta']['iter'] == 6
    assert all(s['step'] == 6 for s in resumed['optimizer']['state'].values())

    # The routing plot of the run.
    run_tool(sys.executable, 'tools/plot_routing.py', str(work_dir))
    assert (work_dir / 'routing.png').stat().st_size > 10_000

    checkpoint = work_dir / 'iter_6.pth'  # max_keep_ckpts=1 removed iter_4.pth
    test_dir = root / 'single_test'
    result = run_tool(sys.executable, 'tools/test.py', str(config), str(checkpoint),
                      '--work-dir', str(test_dir))
    assert 'coco/segm_mAP' in result.stdout + result.stderr

    other_weights = root / 'other_vit.pth'
    torch.manual_seed(1)
    torch.save(MoPPAViT(**TINY_VIT, moppa=None).model.state_dict(), other_weights)
    result = subprocess.run(
        [sys.executable, 'tools/test.py', str(config), str(checkpoint), '--work-dir',
         str(root / 'mismatch'), '--cfg-options', f'model.backbone.checkpoint={other_weights}'],
        cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'holds only the trained parameters' in result.stderr + result.stdout


def test_two_process_gloo_training(toy_setup):
    root, data_root, weights = toy_setup
    config = write_config(root / 'dist.py', data_root, weights, max_iters=8, lr=2e-3)
    work_dir = root / 'dist'
    env_port = str(29500 + os.getpid() % 1000)
    result = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work_dir)],
        cwd=REPO_ROOT, env=dict(child_env(), PORT=env_port), capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    losses = [r['loss'] for r in scalars(work_dir) if 'loss' in r]
    assert len(losses) == 8
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    ranks = [torch.load(work_dir / f'trainable_rank{r}.pt') for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 0
    for key in ranks[0]:
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_8.pth']
