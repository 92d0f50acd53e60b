"""Two gloo ranks through ``tools/dist_train.sh``: ``kill -9`` of torchrun takes the ranks with
it, and a killed and resumed two-rank run equals an uninterrupted one (every rank's generators
are gathered into the checkpoint)."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_faults_resume import INTERVAL, MAX_ITERS, records, write_config
from test_faults_workers import alive, children
from test_resume import REPO_ROOT, child_env

from moppa_det.engine.safe_checkpoint import load_from_local_safe

PORTS = itertools.count(29700 + os.getpid() % 500 * 4)


def dist_train(config: Path, work_dir: Path, *extra: str) -> subprocess.Popen:
    """Starts ``tools/dist_train.sh CONFIG 2``; the process is torchrun itself (``exec``)."""
    env = dict(child_env(), PORT=str(next(PORTS)), PYTHON=sys.executable)
    return subprocess.Popen(['bash', str(REPO_ROOT / 'tools/dist_train.sh'), str(config), '2',
                             '--work-dir', str(work_dir), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.05)


@pytest.mark.slow
def test_ranks_die_with_a_killed_torchrun(tmp_path: Path) -> None:
    config = write_config(tmp_path / 'toy.py', num_workers=0, max_iters=1000,
                          extra="model = dict(type='NoisyToyRegressor', step_seconds=0.5)")
    work_dir = tmp_path / 'work'
    process = dist_train(config, work_dir)
    try:
        wait_for(lambda: any(work_dir.glob('*/vis_data/scalars.json')))  # training
        ranks = children(process.pid)
        assert len(ranks) == 2, ranks
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 1.0
    while any(alive(pid) for pid in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in ranks if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f'ranks {survivors} outlived the killed torchrun'


@pytest.mark.slow
def test_two_rank_run_killed_and_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    config = write_config(tmp_path / 'toy.py', num_workers=0)
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    process = dist_train(config, whole)
    assert process.wait(timeout=600) == 0, process.stdout.read()[-4000:]
    process = dist_train(config, resumed, '--cfg-options', 'model.step_seconds=2.0')
    pointer = resumed / 'last_checkpoint'
    wait_for(lambda: pointer.exists() and pointer.read_text().endswith(f'iter_{INTERVAL}.pth'))
    process.kill()  # SIGKILL to torchrun; its ranks follow
    process.wait()
    assert not (resumed / f'iter_{MAX_ITERS}.pth').exists()
    process = dist_train(config, resumed, '--resume')
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-4000:]
    assert len(load_from_local_safe(str(resumed / f'iter_{MAX_ITERS}.pth'))['random_states']) == 2
    whole_losses, whole_metrics = records(whole)
    resumed_losses, resumed_metrics = records(resumed)
    after = {i: whole_losses[i] for i in range(INTERVAL + 1, MAX_ITERS + 1)}
    assert {i: resumed_losses[i] for i in after} == after
    assert resumed_metrics[-1] == whole_metrics[-1]
    final = [load_from_local_safe(str(d / f'iter_{MAX_ITERS}.pth'))['state_dict']
             for d in (whole, resumed)]
    for key, value in final[0].items():
        torch.testing.assert_close(final[1][key], value, rtol=0, atol=0)
