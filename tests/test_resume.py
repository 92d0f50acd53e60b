"""``tools/train.py`` end to end on a toy model.

An interrupted run resumes with ``--resume`` on torch >= 2.6: the first run is killed with
SIGKILL right after its iteration-3 checkpoint; the second run must load that checkpoint
(HistoryBuffers, numpy values and all, through moppa_det's safe loader) and carry the model,
optimizer and loop state on to iteration 6. And ``--launcher pytorch`` trains on a machine
without CUDA, over gloo.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.runner.checkpoint import _load_checkpoint

from moppa_det.engine.safe_checkpoint import install_safe_checkpoint_loader

install_safe_checkpoint_loader()  # to read the final checkpoint here

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN = REPO_ROOT / 'tools' / 'train.py'
MAX_ITERS, INTERVAL = 6, 3

CONFIG = f"""
default_scope = 'mmdet'
custom_imports = dict(imports=['toy_modules'], allow_failed_imports=False)
model = dict(type='ToyRegressor', step_seconds=0.4)
train_dataloader = dict(
    batch_size=2, num_workers=0, dataset=dict(type='ToyRegressionDataset'),
    sampler=dict(type='DefaultSampler', shuffle=True), collate_fn=dict(type='default_collate'))
train_cfg = dict(type='IterBasedTrainLoop', max_iters={MAX_ITERS})
optim_wrapper = dict(optimizer=dict(type='Adam', lr=0.01))
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval={INTERVAL}, by_epoch=False),
    logger=dict(type='LoggerHook', interval=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
"""


def train_command(config: Path, work_dir: Path, *extra: str) -> list[str]:
    """``tools/train.py`` command line for the toy config."""
    return [sys.executable, str(TRAIN), str(config), '--work-dir', str(work_dir), *extra]


def child_env() -> dict[str, str]:
    """Environment in which the config's ``custom_imports`` finds ``toy_modules``."""
    paths = [str(REPO_ROOT / 'tests'), os.environ.get('PYTHONPATH', '')]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)), OMP_NUM_THREADS='1')


def wait_for_checkpoint(process: subprocess.Popen, work_dir: Path, name: str,
                        log: Path, timeout: float = 60.0) -> None:
    """Waits until ``last_checkpoint`` names ``name``: MMEngine writes it after the file."""
    pointer = work_dir / 'last_checkpoint'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pointer.exists() and pointer.read_text().strip().endswith(name):
            return
        if process.poll() is not None:
            pytest.fail(f'training exited early ({process.returncode}):\n{log.read_text()}')
        time.sleep(0.05)
    process.kill()
    pytest.fail(f'no {name} after {timeout} s:\n{log.read_text()}')


def test_killed_run_resumes_to_the_end(tmp_path: Path) -> None:
    config, work_dir, log = tmp_path / 'toy_config.py', tmp_path / 'work', tmp_path / 'first.log'
    config.write_text(CONFIG)

    with log.open('w') as stream:
        first = subprocess.Popen(train_command(config, work_dir), env=child_env(),
                                 stdout=stream, stderr=subprocess.STDOUT)
        wait_for_checkpoint(first, work_dir, f'iter_{INTERVAL}.pth', log)
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert not (work_dir / f'iter_{MAX_ITERS}.pth').exists(), 'the kill came too late'

    second = subprocess.run(train_command(config, work_dir, '--resume'), env=child_env(),
                            capture_output=True, text=True, timeout=120)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    assert f'Auto resumed from the latest checkpoint {work_dir / f"iter_{INTERVAL}.pth"}' \
        in output
    assert f'resumed epoch: 0, iter: {INTERVAL}' in output
    assert 'local_safe backend' in output  # loaded by moppa_det's loader, not torch defaults

    final = _load_checkpoint(str(work_dir / f'iter_{MAX_ITERS}.pth'), map_location='cpu')
    assert final['meta']['iter'] == MAX_ITERS
    # Adam counts its own steps: 6 only if the resumed run continued the saved state.
    steps = {int(state['step']) for state in final['optimizer']['state'].values()}
    assert steps == {MAX_ITERS}
    # The message hub came back too: the loss history spans both runs.
    losses, _ = final['message_hub']['log_scalars']['train/loss'].data
    assert len(losses) == MAX_ITERS


def load_train_tool():
    """``tools/train.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location('moppa_train_tool', TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only path')
def test_pytorch_launcher_trains_on_cpu_over_gloo(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # What torchrun sets for a one-process job; MMEngine's own init_dist would need CUDA.
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=str(free_port())).items():
        monkeypatch.setenv(name, value)
    config = tmp_path / 'toy_config.py'
    config.write_text(CONFIG)
    train = load_train_tool()
    args = train.parse_args([str(config), '--work-dir', str(tmp_path / 'work'),
                             '--launcher', 'pytorch', '--cfg-options', 'model.step_seconds=0'])
    cfg = train.load_config(args)
    train.apply_train_args(cfg, args)
    try:
        runner = train.build_runner(cfg)
        runner.train()
        assert torch.distributed.get_backend() == 'gloo'
        assert runner.distributed and runner.world_size == 1
        assert isinstance(runner.model, MMDistributedDataParallel)
        assert runner.model.device_ids is None
    finally:
        torch.distributed.destroy_process_group()
    assert runner.iter == MAX_ITERS
    assert (tmp_path / 'work' / f'iter_{MAX_ITERS}.pth').exists()
