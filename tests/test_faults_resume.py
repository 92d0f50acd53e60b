"""Killed with SIGKILL and resumed with ``tools/train.py --resume`` == never interrupted.

Each test trains the same seeded config twice through the real tool: once to the end, once
killed right after its first checkpoint and resumed. The resumed run must log the same loss at
every iteration after the resume point, end with the same parameters bit for bit and report the
same validation metric. The toy model draws from torch's generator every step, the dataset
from Python's, NumPy's and torch's (in the workers, or in the main process with
``num_workers=0``), and the run validates at the checkpoint, so any generator left out of the
checkpoint shows up as a difference. The last test shows that MMEngine's plain Runner fails
this check, so the check can fail.
"""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from test_resume import child_env, train_command, wait_for_checkpoint
from test_train_e2e import child_env as e2e_env
from test_train_e2e import scalars as e2e_scalars
from test_train_e2e import toy_setup  # noqa: F401  (fixture)
from test_train_e2e import write_config as write_e2e_config

from moppa_det.engine.safe_checkpoint import load_from_local_safe

MAX_ITERS, INTERVAL = 8, 4


def write_config(path: Path, num_workers: int, extra: str = '', max_iters: int = MAX_ITERS,
                 item_seconds: float = 0.0) -> Path:
    """A seeded toy config: checkpoint and validation at iteration 4, end at ``max_iters``."""
    workers = f'num_workers={num_workers}, persistent_workers={num_workers > 0}'
    path.write_text(f"""
default_scope = 'mmdet'
custom_imports = dict(imports=['fault_toy_modules'], allow_failed_imports=False)
model = dict(type='NoisyToyRegressor')
train_dataloader = dict(
    batch_size=2, {workers}, dataset=dict(type='AugmentedToyDataset', item_seconds={item_seconds}),
    sampler=dict(type='InfiniteSampler', shuffle=True), collate_fn=dict(type='default_collate'))
val_dataloader = dict(
    batch_size=4, {workers}, dataset=dict(type='AugmentedToyDataset', augment=False),
    sampler=dict(type='DefaultSampler', shuffle=False), collate_fn=dict(type='default_collate'))
val_evaluator = dict(type='ToyMSEMetric')
train_cfg = dict(type='IterBasedTrainLoop', max_iters={max_iters}, val_interval={INTERVAL})
val_cfg = dict(type='ValLoop')
optim_wrapper = dict(optimizer=dict(type='Adam', lr=0.05))
param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end={max_iters})]
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval={INTERVAL}, by_epoch=False, max_keep_ckpts=1),
    logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False, window_size=1)
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
randomness = dict(seed=0, deterministic=True)
{extra}
""")
    return path


def train(config: Path, work_dir: Path, *extra: str) -> str:
    result = subprocess.run(train_command(config, work_dir, *extra), env=e2e_env(),
                            capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


def kill_after_first_checkpoint(config: Path, work_dir: Path, log: Path,
                                first: str = f'iter_{INTERVAL}.pth',
                                last: str = f'iter_{MAX_ITERS}.pth') -> None:
    """Trains until the first checkpoint is complete, then SIGKILL.

    The steps of this run sleep 2 s (the sleep draws no random number), so the kill lands
    long before the next checkpoint.
    """
    with log.open('w') as stream:
        process = subprocess.Popen(train_command(config, work_dir, '--cfg-options',
                                                 'model.step_seconds=2.0'), env=child_env(),
                                   stdout=stream, stderr=subprocess.STDOUT)
        wait_for_checkpoint(process, work_dir, first, log, timeout=240)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (work_dir / last).exists(), 'the kill came too late'


def records(work_dir: Path) -> tuple[dict[int, float], list[float]]:
    """Per-iteration losses and the validation metrics of every run in ``work_dir``."""
    losses, metrics = {}, []
    for path in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if 'loss' in record:
                losses[record['iter']] = record['loss']
            if 'toy/mse' in record:
                metrics.append(record['toy/mse'])
    return losses, metrics


def final_state(work_dir: Path) -> dict[str, torch.Tensor]:
    return load_from_local_safe(str(work_dir / f'iter_{MAX_ITERS}.pth'))['state_dict']


def run_both(tmp_path: Path, num_workers: int, extra: str = '') -> tuple[Path, Path]:
    config = write_config(tmp_path / 'toy.py', num_workers, extra)
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    train(config, whole)
    kill_after_first_checkpoint(config, resumed, tmp_path / 'killed.log')
    output = train(config, resumed, '--resume')
    assert f'resumed epoch: 0, iter: {INTERVAL}' in output
    return whole, resumed


# Workers: their generators come back through MMEngine's replay (slow: worker start-up).
@pytest.mark.parametrize('num_workers', [0, pytest.param(1, marks=pytest.mark.slow)])
def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path: Path,
                                                         num_workers: int) -> None:
    whole, resumed = run_both(tmp_path, num_workers)
    whole_losses, whole_metrics = records(whole)
    resumed_losses, resumed_metrics = records(resumed)
    assert sorted(whole_losses) == list(range(1, MAX_ITERS + 1))
    after = {i: whole_losses[i] for i in whole_losses if i > INTERVAL}
    assert {i: resumed_losses[i] for i in after} == after  # exact, every iteration
    assert len(whole_metrics) == 2 and resumed_metrics[-1] == whole_metrics[-1]
    for key, value in final_state(whole).items():
        torch.testing.assert_close(final_state(resumed)[key], value, rtol=0, atol=0)


@pytest.mark.slow
def test_epoch_based_loop_resumes_exactly(tmp_path: Path) -> None:
    """EpochBasedTrainLoop (the COCO configs'): 4 epochs of 8 iterations, checkpoint and
    validation every 2 epochs. (With persistent workers the workers' generators would not come
    back: MMEngine seeds them once, and a resumed run starts them afresh.)"""
    config = write_config(tmp_path / 'toy.py', 0, extra="""
train_dataloader = dict(
    batch_size=2, num_workers=0, dataset=dict(type='AugmentedToyDataset'),
    sampler=dict(type='DefaultSampler', shuffle=True), collate_fn=dict(type='default_collate'))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=4, val_interval=2)
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=True, max_keep_ckpts=1),
    logger=dict(type='LoggerHook', interval=1))
""")
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    train(config, whole)
    kill_after_first_checkpoint(config, resumed, tmp_path / 'killed.log', 'epoch_2.pth',
                                'epoch_4.pth')
    assert 'resumed epoch: 2, iter: 16' in train(config, resumed, '--resume')
    whole_losses, whole_metrics = records(whole)
    resumed_losses, resumed_metrics = records(resumed)
    assert sorted(whole_losses) == list(range(1, 33))
    assert {i: resumed_losses[i] for i in range(17, 33)} == \
        {i: whole_losses[i] for i in range(17, 33)}
    assert resumed_metrics[-1] == whole_metrics[-1]


@pytest.mark.slow
def test_mmengine_runner_alone_does_not_resume_exactly(tmp_path: Path) -> None:
    """The control: without moppa_det's runner the same check fails."""
    whole, resumed = run_both(tmp_path, 0, extra="runner_type = 'Runner'")
    whole_losses, _ = records(whole)
    resumed_losses, _ = records(resumed)
    assert any(resumed_losses[i] != whole_losses[i] for i in range(INTERVAL + 1, MAX_ITERS + 1))


@pytest.mark.slow
def test_detector_killed_and_resumed_equals_uninterrupted(toy_setup,  # noqa: F811
                                                          tmp_path: Path) -> None:
    """The same on Mask R-CNN with a tiny frozen MoPPA ViT (RPN/RoI sampling, RandomFlip,
    COCO metrics): 6 iterations, checkpoint and validation every 3."""
    root, data_root, weights = toy_setup
    config = write_e2e_config(tmp_path / 'det.py', data_root, weights, max_iters=6, lr=1e-3)
    options = ['--cfg-options', 'default_hooks.checkpoint.interval=3', 'train_cfg.val_interval=3',
               'randomness.deterministic=True']
    whole, resumed, log = tmp_path / 'whole', tmp_path / 'resumed', tmp_path / 'killed.log'
    train(config, whole, *options)
    with log.open('w') as stream:
        process = subprocess.Popen(train_command(config, resumed, *options), env=e2e_env(),
                                   stdout=stream, stderr=subprocess.STDOUT)
        wait_for_checkpoint(process, resumed, 'iter_3.pth', log, timeout=300)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (resumed / 'iter_6.pth').exists(), 'the kill came too late'
    assert 'resumed epoch: 0, iter: 3' in train(config, resumed, '--resume', *options)

    def losses_and_metrics(work_dir: Path) -> tuple[dict[int, float], dict[str, float]]:
        rows = e2e_scalars(work_dir)
        return ({r['iter']: r['loss'] for r in rows if 'loss' in r},
                [r for r in rows if 'coco/bbox_mAP' in r][-1])

    whole_losses, whole_metrics = losses_and_metrics(whole)
    resumed_losses, resumed_metrics = losses_and_metrics(resumed)
    assert {i: resumed_losses[i] for i in (4, 5, 6)} == {i: whole_losses[i] for i in (4, 5, 6)}
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert resumed_metrics[key] == whole_metrics[key], (key, resumed_metrics, whole_metrics)
