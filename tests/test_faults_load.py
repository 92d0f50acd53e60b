"""Under load: 300 iterations of two gloo processes through ``tools/dist_train.sh``.

DDP with ``find_unused_parameters=False`` on the tiny MoPPA Mask R-CNN: the run must finish,
each process's resident memory must not grow after warm-up (figures printed with ``-s``), and
both ranks must end with identical trainable parameters.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from test_train_e2e import child_env, toy_setup, write_config  # noqa: F401  (fixture)

MAX_ITERS, WARM_UP = 300, 50
# Allocator and page-cache noise seen between iteration 50 and 300 stays well under this.
GROWTH_LIMIT_MIB = 64


def write_load_config(path: Path, base: Path) -> Path:
    path.write_text(f"""
_base_ = ['{base}']
custom_imports = dict(imports=['moppa_det', 'dist_check_hook', 'fault_memory_hook'],
                      allow_failed_imports=False)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_iters={MAX_ITERS}, val_interval={MAX_ITERS})
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=100, max_keep_ckpts=1))
custom_hooks = [dict(type='AdapterHostHook'), dict(type='TrainableCheckpointHook'),
                dict(type='DumpTrainableParamsHook'), dict(type='RecordMemoryHook', interval=25)]
model_wrapper_cfg = dict(type='MMDistributedDataParallel', find_unused_parameters=False)
""")
    return path


@pytest.mark.slow
def test_two_gloo_processes_for_300_iterations(toy_setup, tmp_path: Path) -> None:  # noqa: F811
    root, data_root, weights = toy_setup
    base = write_config(tmp_path / 'base.py', data_root, weights, max_iters=MAX_ITERS, lr=1e-3)
    config = write_load_config(tmp_path / 'load.py', base)
    work_dir = tmp_path / 'work'
    result = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work_dir)],
        cwd=REPO_ROOT, env=dict(child_env(), PORT=str(29600 + os.getpid() % 1000)),
        capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    for rank in range(2):
        memory = {int(k): v for k, v in
                  json.loads((work_dir / f'memory_rank{rank}.json').read_text()).items()}
        print(f'rank {rank}: [RSS MiB, RSS after malloc_trim MiB, Python objects] by '
              f'iteration {memory}')
        assert max(memory) == MAX_ITERS
        growth = memory[MAX_ITERS][1] - memory[WARM_UP][1]
        assert growth < GROWTH_LIMIT_MIB, f'rank {rank} grew {growth:.1f} MiB: {memory}'

    ranks = [torch.load(work_dir / f'trainable_rank{r}.pt') for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 0
    for key in ranks[0]:
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)
    assert sorted(p.name for p in work_dir.glob('*.pth')) == [f'iter_{MAX_ITERS}.pth']
