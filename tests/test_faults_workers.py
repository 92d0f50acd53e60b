"""``kill -9`` of ``tools/train.py``: its data-loader workers die with it.

Without ``PR_SET_PDEATHSIG`` a worker lives on after its parent is killed until it finishes its
batch (torch's workers look for their parent between batches) or, when idle, until its next
5 s status check. The test gives the workers 3 s batches and allows 1 s.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_faults_resume import write_config
from test_resume import child_env, train_command

pytestmark = pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='needs Linux /proc')


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            stat = process_stat(int(entry))
            if stat is not None and stat[1] == pid and stat[0] != 'Z':
                found.append(int(entry))
    return found


def process_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        text = Path(f'/proc/{pid}/stat').read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    state, ppid = text.rsplit(')', 1)[1].split()[:2]  # the name may hold spaces
    return state, int(ppid)


def alive(pid: int) -> bool:
    stat = process_stat(pid)
    return stat is not None and stat[0] != 'Z'


def test_workers_die_with_a_killed_training_process(tmp_path: Path) -> None:
    config = write_config(tmp_path / 'toy.py', num_workers=2, max_iters=1000, item_seconds=1.5)
    log = tmp_path / 'train.log'
    with log.open('w') as stream:
        process = subprocess.Popen(train_command(config, tmp_path / 'work'), env=child_env(),
                                   stdout=stream, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while 'Iter(train)' not in log.read_text():  # workers up and serving batches
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            workers = children(process.pid)
            assert len(workers) >= 2, f'expected the 2 data-loader workers, found {workers}'
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    deadline = time.monotonic() + 1.0
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [pid for pid in workers if alive(pid)]
    for pid in survivors:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f'data-loader workers {survivors} outlived the killed run'


def test_death_signal_is_composed_with_mmengine_seeding() -> None:
    """The workers keep MMEngine's seeding worker_init_fn; the death signal comes first."""
    from functools import partial

    from fault_toy_modules import AugmentedToyDataset
    from mmengine.dataset import worker_init_fn

    from moppa_det.engine.runner import FaultTolerantRunner
    from moppa_det.engine.worker_init import DieWithParentWorkerInit

    loader = FaultTolerantRunner.build_dataloader(
        dict(batch_size=2, num_workers=2, dataset=dict(type=AugmentedToyDataset),
             sampler=dict(type='DefaultSampler', shuffle=True),
             collate_fn=dict(type='default_collate')), seed=7)
    init = loader.worker_init_fn
    assert isinstance(init, DieWithParentWorkerInit) and init.parent_pid == os.getpid()
    assert isinstance(init.init_fn, partial) and init.init_fn.func is worker_init_fn
    assert init.init_fn.keywords['seed'] == 7 and init.init_fn.keywords['num_workers'] == 2
    # Two epochs through real workers give the same seeded augmentation as MMEngine's alone.
    first = [batch['inputs'] for batch in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, [batch['inputs'] for batch in loader]))
